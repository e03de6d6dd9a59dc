#!/usr/bin/env bash
# The same shapes of load against Redis on this machine, for docs/performance.md: SET
# with an fsync before every answer (appendfsync always, the durability ringkv gives a
# PUT, though on one node instead of two) and GET, with 1 and 50 connections.
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server).
#
#   scripts/perf-redis.sh [REQUESTS]   (default 100000 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-100000}"
data=./perf-data-redis
port=6399
rm -rf "$data"
mkdir -p "$data"
redis-server --port "$port" --dir "$data" --appendonly yes --appendfsync always \
    --save "" --daemonize no > "$data/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-server --version
for c in 1 50; do
    echo "== SET (appendfsync always), $c connections: redis-benchmark -t set -c $c -n $requests -d 100 -r 10000"
    redis-benchmark -p "$port" -t set -c "$c" -n "$requests" -d 100 -r 10000 -q
done
for c in 1 50; do
    echo "== GET, $c connections: redis-benchmark -t get -c $c -n $requests -d 100 -r 100"
    redis-benchmark -p "$port" -t get -c "$c" -n "$requests" -d 100 -r 100 -q
done
