#!/usr/bin/env bash
# Two builds of ringkv side by side: starts `ringkv local --servers 3` from each (data under
# ./perf-data-ab-A and -B, removed at the end), then runs `ringkv bench` against A and B in
# turns, ROUNDS times, so that both see the same machine from minute to minute. Prints every
# run and the medians: ops/s, p50 us, the cluster's CPU us per operation (user + system
# of its process, from /proc).
#
#   scripts/perf-ab.sh BIN_A BIN_B [ROUNDS] [CONNECTIONS] [DURATION_S] [KEYS] [GET_PERCENT]
#   e.g. scripts/perf-ab.sh ./ringkv-before target/release/ringkv 5 1 3 100000 0
#
# With AB_CLIENT=redis-benchmark, each run is `redis-benchmark -t set` (GET_PERCENT 0) or
# `-t get` (100; after a SET of every key) against the cluster's RESP port instead, for
# DURATION_S times 10,000 requests, its random values included; CPU from /proc around it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
bin_a=$1 bin_b=$2 rounds=${3:-5} conns=${4:-1} dur=${5:-3} keys=${6:-100000} get_percent=${7:-0}
client=${AB_CLIENT:-ringkv-bench}
case "$get_percent/$client" in
    */ringkv-bench | 0/redis-benchmark | 100/redis-benchmark) ;;
    *) echo "AB_CLIENT=redis-benchmark takes GET_PERCENT 0 or 100"; exit 2 ;;
esac
preload=()
[ "$get_percent" -gt 0 ] && preload=(--preload)
declare -A pid addr resp
cleanup() {
    kill -INT "${pid[A]:-}" "${pid[B]:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf ./perf-data-ab-A ./perf-data-ab-B
}
trap cleanup EXIT
for side in A B; do
    bin=$bin_a
    [ "$side" = B ] && bin=$bin_b
    dir=./perf-data-ab-$side
    rm -rf "$dir"
    mkdir -p "$dir"
    "$bin" local --no-console --servers 3 --data-dir "$dir/cluster" --client-addr 127.0.0.1:0 \
        --server-addr 127.0.0.1:0 --resp-addr 127.0.0.1:0 > "$dir/local.out" 2>&1 &
    pid[$side]=$!
    for _ in $(seq 300); do
        grep -q "stop with Ctrl-C" "$dir/local.out" 2>/dev/null && break
        sleep 0.1
    done
    addr[$side]=$(grep -oE '^clients connect to [0-9.]+:[0-9]+' "$dir/local.out" | awk '{print $4}')
    resp[$side]=$(grep -oE 'RESP2\) use [0-9.]+:[0-9]+' "$dir/local.out" | awk -F: '{print $NF}')
    [ -n "${addr[$side]}" ] && [ -n "${resp[$side]}" ] ||
        { echo "cluster $side did not start:"; cat "$dir/local.out"; exit 1; }
    if [ "$client" = redis-benchmark ] && [ "$get_percent" = 100 ]; then
        redis-benchmark -p "${resp[$side]}" -t set -r "$keys" -n $((keys * 4)) -d 100 -q > /dev/null
    fi
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One redis-benchmark run against SIDE; prints a row as the ringkv bench branch does.
rb_run() {
    local side=$1 test=set n=$((dur * 10000)) before after csv
    [ "$get_percent" = 100 ] && test=get
    before=$(ticks "${pid[$side]}")
    csv=$(redis-benchmark -p "${resp[$side]}" -t "$test" -c "$conns" -n "$n" -r "$keys" -d 100 \
        --csv | tail -1)
    after=$(ticks "${pid[$side]}")
    echo "$csv" | awk -F'","' -v side="$side" -v n="$n" -v t=$((after - before)) \
        '{ printf "%s\t%.0f\t%.0f\t%.1f\n", side, $2, $5 * 1000, t * 10000 / n }'
}
runs=./perf-data-ab-A/runs.tsv
: > "$runs"
for round in $(seq "$rounds"); do
    for side in A B; do
        if [ "$client" = redis-benchmark ]; then
            rb_run "$side" >> "$runs"
            continue
        fi
        "$bin_b" bench --addr "${addr[$side]}" --json --pids "${pid[$side]}" --value-bytes 100 \
            --connections "$conns" --get-percent "$get_percent" --keys "$keys" \
            --duration-s "$dur" "${preload[@]}" |
            python3 -c '
import json, sys
r = json.load(sys.stdin)
kind = "put" if r["put"]["count"] >= r["get"]["count"] else "get"
print("%s\t%.0f\t%d\t%.1f" % (sys.argv[1], r["ops_per_s"], r[kind]["p50_us"], r["cpu"]["cluster_us_per_op"]))
' "$side" >> "$runs"
    done
done
echo "A = $bin_a, B = $bin_b; $client; $rounds rounds of $dur s, $conns connections, $keys keys, $get_percent% GETs"
python3 - "$runs" <<'EOF_PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
for side in "AB":
    mine = [r for r in rows if r[0] == side]
    ops = [float(r[1]) for r in mine]
    p50 = [float(r[2]) for r in mine]
    cpu = [float(r[3]) for r in mine]
    print("%s: ops/s %s median %.0f; p50 us %s median %.0f; CPU us/op %s median %.1f" % (
        side, [round(x) for x in ops], statistics.median(ops),
        [round(x) for x in p50], statistics.median(p50), cpu, statistics.median(cpu)))
EOF_PY
