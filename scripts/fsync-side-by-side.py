#!/usr/bin/env python3
"""What N logs syncing side by side on one disk cost, as a PUT of `ringkv local` makes
them (the two replicas' prepare records and the coordinator's staged record).

N processes each write a 180-byte record and fdatasync it, in lock step (a barrier before
each round), COUNT rounds, twice per mode; prints each sync's p50 and the round's (the
slowest of the N, what a PUT waits for), for files that grow with every write (append)
and files whose space was written ahead (zero: what the logs do since they allocate
ahead).

  scripts/fsync-side-by-side.py [DIR] [COUNT] [N]   (default: ./perf-data-fsync, 2000, 3)
"""
import multiprocessing as mp
import os
import sys
import time

RECORD = b"x" * 180


def worker(index, mode, count, barrier, results, folder):
    path = os.path.join(folder, f"side-by-side-{mode}-{index}")
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if mode == "zero":
        os.write(fd, b"\0" * (count * len(RECORD) + 4096))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    latencies = []
    for _ in range(count):
        barrier.wait()
        started = time.perf_counter()
        os.write(fd, RECORD)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - started)
    os.close(fd)
    os.remove(path)
    results.put(latencies)


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "./perf-data-fsync"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    os.makedirs(folder, exist_ok=True)
    for _ in range(2):
        for mode in ["append", "zero"]:
            barrier = mp.Barrier(n)
            results = mp.Queue()
            procs = [
                mp.Process(target=worker, args=(i, mode, count, barrier, results, folder))
                for i in range(n)
            ]
            for proc in procs:
                proc.start()
            runs = [results.get() for _ in procs]
            for proc in procs:
                proc.join()
            rounds = sorted(max(run[k] for run in runs) for k in range(count))
            each = sorted(x for run in runs for x in run)
            print(
                f"{mode:7} n={n} each sync p50 {each[len(each) // 2] * 1e6:6.0f} us   "
                f"round (slowest) p50 {rounds[count // 2] * 1e6:6.0f} us, "
                f"p99 {rounds[count * 99 // 100] * 1e6:6.0f} us"
            )


if __name__ == "__main__":
    main()
