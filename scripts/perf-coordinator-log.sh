#!/usr/bin/env bash
# Measures what the coordinator's log costs a PUT: two clusters of separate processes on
# this machine, the same in all but the coordinator's --data-dir, benched in turns (A, B,
# A, B) so that the machine's drift hits both alike. PUTs of 100-byte values over 10,000
# keys, 1 and 50 connections; CPU per operation summed over all four processes.
#
#   scripts/perf-coordinator-log.sh [DURATION_S]      (default 8 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s="${1:-8}"
data=./perf-data-coordinator-log
rm -rf "$data"
mkdir -p "$data"
cargo build --release -q -p ringkv
bin=./target/release/ringkv
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT

# start NAME [COORDINATOR FLAGS...]: a coordinator and three servers; prints the client
# address and the comma-separated PIDs.
start() {
    local name=$1; shift
    local out="$data/$name.coordinator"
    "$bin" coordinator --client-addr 127.0.0.1:0 --server-addr 127.0.0.1:0 --servers 3 "$@" \
        > "$out" 2>/dev/null &
    local cpid=$!
    pids+=("$cpid")
    for _ in $(seq 100); do grep -q '^server ' "$out" 2>/dev/null && break; sleep 0.05; done
    local client server
    client=$(awk '/^client /{print $2}' "$out")
    server=$(awk '/^server /{print $2}' "$out")
    local list="$cpid"
    for id in 1 6148914691236517205 12297829382473034410; do
        "$bin" server --id "$id" --coordinator "$server" \
            --data-dir "$data/$name-server-$id" > /dev/null 2>&1 &
        pids+=("$!")
        list="$list,$!"
    done
    for _ in $(seq 200); do
        "$bin" status --addr "$client" --json 2>/dev/null | grep -o '"up":true' | wc -l | grep -q 3 && break
        sleep 0.05
    done
    echo "$client $list"
}

read -r addr_log pids_log < <(start with-log --data-dir "$data/coordinator")
read -r addr_mem pids_mem < <(start without-log)
echo "== $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
for round in 1 2; do
    for c in 1 50; do
        for variant in with-log without-log; do
            if [ "$variant" = with-log ]; then addr=$addr_log; p=$pids_log; else addr=$addr_mem; p=$pids_mem; fi
            printf '%s round %s, %s connections: ' "$variant" "$round" "$c"
            "$bin" bench --addr "$addr" --pids "$p" --connections "$c" --get-percent 0 \
                --keys 10000 --value-bytes 100 --duration-s "$duration_s" --json
        done
    done
done
