#!/usr/bin/env bash
# Measures what compacting the coordinator's log costs: two clusters of separate
# processes (a coordinator and three KV servers), the same but for the coordinator's
# --log-compact-bytes (the default 64 MiB, never reached in a run, against 256 KiB,
# reached every fraction of a second), benched in turns (A, B, B, A). PUTs of 100-byte
# values over 1,000 keys with 16 connections; prints the bench's JSON line, the log's
# size at the end, and how many compactions ran and how long they took on the loop.
#
#   scripts/perf-coordinator-compaction.sh [DURATION_S]      (default 8 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s="${1:-8}"
data=./perf-data-coordinator-compaction
rm -rf "$data"
cargo build --release -q -p ringkv
bin=./target/release/ringkv
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT

# run NAME COMPACT_BYTES: one cluster, one bench, then it is stopped.
run() {
  local dir="$data/$1"
  mkdir -p "$dir"
  "$bin" -v coordinator --client-addr 127.0.0.1:18480 --server-addr 127.0.0.1:19490 \
    --servers 3 --data-dir "$dir/c" --log-compact-bytes "$2" 2>"$dir/coordinator.log" >/dev/null &
  pids=($!)
  sleep 0.5
  for i in 1 2 3; do
    "$bin" server --id $((i * 1000)) --coordinator 127.0.0.1:19490 \
      --data-dir "$dir/s$i" >/dev/null 2>"$dir/s$i.log" &
    pids+=($!)
  done
  sleep 2
  echo "== $1 (--log-compact-bytes $2)"
  "$bin" bench --addr 127.0.0.1:18480 --duration-s "$duration_s" --connections 16 \
    --keys 1000 --value-bytes 100 --get-percent 0 \
    --pids "$(IFS=,; echo "${pids[*]}")" --json
  echo "log bytes at the end: $(stat -c %s "$dir/c/wal.log")"
  { grep "log compacted" "$dir/coordinator.log" || true; } | sed -E 's/.*took_us=([0-9]+).*/\1/' | sort -n |
    awk '{t[NR]=$1} END {if (NR) print "compactions", NR, "took_us p50", t[int(NR/2)+1], "max", t[NR]; else print "no compaction"}'
  kill "${pids[@]}"
  wait 2>/dev/null || true
  pids=()
}

run default-1 67108864
run small-1 262144
run small-2 262144
run default-2 67108864
