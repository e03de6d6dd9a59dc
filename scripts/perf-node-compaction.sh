#!/usr/bin/env bash
# Measures what compacting a node's log costs: two clusters of three
# `ringkv node --mode MODE` processes (N = 3), the same but for --log-compact-bytes
# (the default 64 MiB, never reached in a run, against 1 MiB, reached every few seconds),
# benched in turns (A, B, B, A). PUTs at quorum of 100-byte values over 10,000 keys with
# 16 connections to the first node (at quorum in eventual mode); prints the bench's JSON
# line, the first node's log
# size at the end, and how many compactions the three nodes ran, how long they took on
# the loop and how large the compacted logs were.
#
#   [MODE=eventual|peer] scripts/perf-node-compaction.sh [DURATION_S]
#                                        (eventual by default, 8 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s="${1:-8}"
mode="${MODE:-eventual}"
level=()
if [ "$mode" = eventual ]; then level=(--consistency quorum); fi
data=./perf-data-node-compaction
rm -rf "$data"
cargo build --release -q -p ringkv
bin=./target/release/ringkv
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT

# run NAME COMPACT_BYTES: one cluster, one bench, then it is stopped.
run() {
  local dir="$data/$1"
  mkdir -p "$dir"
  printf '1 127.0.0.1:18701\n2 127.0.0.1:18702\n3 127.0.0.1:18703\n' >"$dir/cluster"
  for i in 1 2 3; do
    "$bin" -v node --mode "$mode" --id "$i" --cluster "$dir/cluster" --data-dir "$dir/n$i" \
      --replication 3 --log-compact-bytes "$2" >/dev/null 2>"$dir/n$i.log" &
    pids+=($!)
  done
  sleep 2
  echo "== $1 (--log-compact-bytes $2)"
  "$bin" bench --addr 127.0.0.1:18701 --duration-s "$duration_s" --connections 16 \
    --keys 10000 --value-bytes 100 --get-percent 0 "${level[@]}" \
    --pids "$(IFS=,; echo "${pids[*]}")" --json
  echo "first node's log bytes at the end: $(stat -c %s "$dir/n1/wal.log")"
  { grep -h "node log compacted" "$dir"/n?.log || true; } | sed -E 's/.*took_us=([0-9]+).*/\1/' | sort -n |
    awk '{t[NR]=$1} END {if (NR) print "compactions", NR, "took_us p50", t[int(NR/2)+1], "max", t[NR]; else print "no compaction"}'
  { grep -h "node log compacted" "$dir"/n?.log || true; } | sed -E 's/.*to_bytes=([0-9]+).*/\1/' | sort -n |
    awk '{b[NR]=$1} END {if (NR) print "compacted log bytes min", b[1], "max", b[NR]}'
  kill "${pids[@]}"
  wait 2>/dev/null || true
  pids=()
}

run default-1 67108864
run small-1 1048576
run small-2 1048576
run default-2 67108864
