#!/usr/bin/env bash
# Measures what docs/performance.md reports: the floor (fsync, loopback round trip), then
# ringkv bench against a local 3-server cluster for PUT, GET cache hits and GET cache
# misses with 1 and 50 connections. Data goes under ./perf-data (removed at the end).
#
#   scripts/perf.sh [DURATION_S]      (default 10 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s="${1:-10}"
data=./perf-data
rm -rf "$data"
mkdir -p "$data"

cargo build --release -q -p ringkv
bin=./target/release/ringkv

echo "== machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "== floor: ringkv probe --dir $data --samples 5000"
"$bin" probe --dir "$data" --samples 5000

"$bin" local --no-console --servers 3 --data-dir "$data/cluster" \
    --client-addr 127.0.0.1:0 --server-addr 127.0.0.1:0 > "$data/local.out" 2>&1 &
local_pid=$!
trap 'kill $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 300); do
    if grep -q "stop with Ctrl-C" "$data/local.out" 2>/dev/null; then
        addr=$(grep -oE 'clients connect to [0-9.]+:[0-9]+' "$data/local.out" | awk '{print $4}')
        break
    fi
    sleep 0.1
done
[ -n "$addr" ] || { echo "cluster did not start:"; cat "$data/local.out"; exit 1; }
# Wait until every server registered.
for _ in $(seq 100); do
    "$bin" status --addr "$addr" --json | grep -o '"up":true' | wc -l | grep -q 3 && break
    sleep 0.1
done
echo "== cluster at $addr"

run() {
    local name=$1; shift
    echo "== $name: ringkv bench --addr ADDR $*"
    "$bin" bench --addr "$addr" --duration-s "$duration_s" "$@"
}

for c in 1 50; do
    run "PUT, $c connections" --connections "$c" --get-percent 0 --keys 10000 --value-bytes 100
done
for c in 1 50; do
    run "GET, cache hits, $c connections" --connections "$c" --get-percent 100 --keys 100 --value-bytes 100 --preload
done
for c in 1 50; do
    run "GET, cache misses, $c connections" --connections "$c" --get-percent 100 --keys 50000 --value-bytes 100 --preload
done
run "90% GET / 10% PUT, 50 connections" --connections 50 --get-percent 90 --keys 10000 --value-bytes 100 --preload
