#!/usr/bin/env python3
"""What an fdatasync of one small record costs here, by how the file's space was made.

Writes N records of 180 bytes, each followed by fdatasync, to a fresh file in DIR, four
ways, twice each, and prints the p50 latency and the process's CPU time per sync:
  append    the file grows with every write (what ringkv's logs do)
  keep      fallocate(KEEP_SIZE) ahead: blocks reserved, the size still grows
  falloc    fallocate ahead: size set, unwritten extents, records overwrite them
  zero      zeros written and synced ahead, records overwrite them

  scripts/fsync-modes.py [DIR] [N]      (default: ./perf-data-fsync, 3000)
"""
import ctypes
import os
import resource
import sys
import time

FALLOC_FL_KEEP_SIZE = 1
RECORD = b"x" * 180


def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(path, mode, count, libc):
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    size = count * len(RECORD) + 4096
    if mode == "zero":
        os.write(fd, b"\0" * size)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    elif mode == "falloc":
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    elif mode == "keep":
        if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(size)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate")
        os.fsync(fd)
    latencies = []
    cpu_before = cpu_s()
    for _ in range(count):
        started = time.perf_counter()
        os.write(fd, RECORD)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - started)
    cpu_after = cpu_s()
    os.close(fd)
    os.remove(path)
    latencies.sort()
    p50_us = latencies[count // 2] * 1e6
    cpu_us = (cpu_after - cpu_before) / count * 1e6
    print(f"{mode:8} p50 {p50_us:6.0f} us   cpu per sync {cpu_us:5.1f} us")


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "./perf-data-fsync"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    os.makedirs(folder, exist_ok=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for _ in range(2):
        for mode in ["append", "keep", "falloc", "zero"]:
            run(os.path.join(folder, f"fsync-{mode}"), mode, count, libc)


if __name__ == "__main__":
    main()
