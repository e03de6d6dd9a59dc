#!/usr/bin/env bash
# ringkv's strong mode side by side with etcd, the strongly consistent store most like it:
# a three-member etcd cluster (a write is durable on a majority: the leader's log and one
# follower's, each fsynced) against `ringkv local` with three KV servers (a write is
# durable on both of its replicas and in the coordinator's log), on this one machine and
# disk. Each workload runs on both in turn, ROUNDS times; every ratio is taken within a
# round, and the table gives medians over the rounds. CPU per operation is the servers'
# user + system time from /proc/PID/stat (ringkv: the `ringkv local` process; etcd: its
# three processes), the figure that stays comparable on a noisy machine. The clients' own
# CPU per operation is shown beside it: both clients share the two cores with the servers.
#
# etcd is loaded by etcd-bench/ (a gRPC client: one connection per client, one request in
# flight on each, as `ringkv bench` does; one workload also runs with etcd's clients
# sharing one connection, which costs its client less), always through the leader, etcd's
# best case: a follower would forward writes to the leader and ask it for every
# linearizable read.
#
# Needs etcd and etcdctl (Debian: apt-get install etcd-server etcd-client), protoc to build
# etcd-bench (apt-get install protobuf-compiler) and python3. Data goes under
# ./perf-data-etcd (removed at the end).
#
#   scripts/perf-etcd.sh [SCALE] [ROUNDS]   (defaults 1 and 3: about 100 s of load per
#                                            round; SCALE 2 doubles every run)
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1}"
rounds="${2:-3}"
for n in "$scale" "$rounds"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/perf-etcd.sh [SCALE] [ROUNDS] (positive integers)" >&2; exit 2; }
done
for tool in etcd etcdctl protoc python3; do
    command -v "$tool" >/dev/null || { echo "perf-etcd.sh needs $tool" >&2; exit 1; }
done
data=./perf-data-etcd
rm -rf "$data"
mkdir -p "$data"

cargo build --release -q -p ringkv
cargo build --release -q --manifest-path etcd-bench/Cargo.toml
bin=./target/release/ringkv
etcd_bench=./etcd-bench/target/release/ringkv-etcd-bench

echo "== machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $("$bin" --version); etcd $(etcd --version | awk '/etcd Version/ {print $3}')"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; rm -rf "$data"' EXIT

"$bin" local --no-console --servers 3 --data-dir "$data/ringkv" --client-addr 127.0.0.1:0 \
    --server-addr 127.0.0.1:0 > "$data/local.out" 2>&1 &
local_pid=$!
pids+=("$local_pid")

client_urls=() peer_urls=() cluster=""
for i in 1 2 3; do
    client_urls+=("http://127.0.0.1:$(free_port)")
    peer_urls+=("http://127.0.0.1:$(free_port)")
    cluster+="${cluster:+,}m$i=${peer_urls[-1]}"
done
etcd_pids=()
for i in 0 1 2; do
    etcd --name "m$((i + 1))" --data-dir "$data/etcd-m$((i + 1))" \
        --listen-client-urls "${client_urls[i]}" --advertise-client-urls "${client_urls[i]}" \
        --listen-peer-urls "${peer_urls[i]}" --initial-advertise-peer-urls "${peer_urls[i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token perf \
        --logger zap --log-level error > "$data/etcd-m$((i + 1)).log" 2>&1 &
    etcd_pids+=($!)
    pids+=($!)
done

for _ in $(seq 300); do
    grep -q "stop with Ctrl-C" "$data/local.out" 2>/dev/null && break
    sleep 0.1
done
addr=$(grep -oE '^clients connect to [0-9.]+:[0-9]+' "$data/local.out" | awk '{print $4}')
[ -n "$addr" ] || { echo "ringkv did not start:"; cat "$data/local.out"; exit 1; }
endpoints=$(IFS=,; echo "${client_urls[*]}")
leader=""
for _ in $(seq 100); do
    leader=$(etcdctl --endpoints "$endpoints" endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
for member in json.load(sys.stdin):
    status = member["Status"]
    if status["leader"] != 0 and status["leader"] == status["header"]["member_id"]:
        print(member["Endpoint"])' 2>/dev/null || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { echo "etcd elected no leader:"; tail -5 "$data"/etcd-m*.log; exit 1; }
echo "== ringkv local (pid $local_pid): $addr; etcd (pids ${etcd_pids[*]}): leader $leader"

# User + system ticks (1/100 s) of processes, all threads, summed.
ticks() {
    local pid sum=0
    for pid in "$@"; do
        sum=$((sum + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat")))
    done
    echo "$sum"
}
rows="$data/rows.tsv"
: > "$rows"

# ringkv bench against the JSON port; adds a row: name, system, round, ops/s, p50 us,
# servers' CPU us/op, client's CPU us/op.
ringkv_run() {
    local name=$1; shift
    local json
    json=$("$bin" bench --addr "$addr" --json --pids "$local_pid" --value-bytes 100 "$@")
    echo "   ringkv bench $*: $json"
    echo "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if r["errors"]:
    sys.exit("ringkv bench reported errors: %s" % r["errors"])
kind = "put" if r["put"]["count"] >= r["get"]["count"] else "get"
print("\t".join([sys.argv[1], "ringkv", sys.argv[2], "%.0f" % r["ops_per_s"], str(r[kind]["p50_us"]),
                 "%.1f" % r["cpu"]["cluster_us_per_op"], "%.1f" % r["cpu"]["bench_us_per_op"]]))' "$name" "$round" >> "$rows"
}

# etcd-bench against the leader; adds a row the same way, the servers' CPU read here.
etcd_run() {
    local name=$1; shift
    local json before after
    before=$(ticks "${etcd_pids[@]}")
    json=$("$etcd_bench" --endpoints "$leader" --value-bytes 100 "$@")
    after=$(ticks "${etcd_pids[@]}")
    echo "   etcd-bench $*: $json"
    echo "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("\t".join([sys.argv[1], "etcd", sys.argv[2], "%.0f" % r["ops_per_s"], str(r["p50_us"]),
                 "%.1f" % (int(sys.argv[3]) * 10000 / r["ops"]), "%.1f" % r["bench_us_per_op"]]))' \
        "$name" "$round" $((after - before)) >> "$rows"
}

d=$((10 * scale))
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds"
    echo "== PUT, 1 connection"
    ringkv_run "PUT, 1 conn" --connections 1 --get-percent 0 --keys 100000 --duration-s "$d"
    etcd_run "PUT, 1 conn" --connections 1 --get-percent 0 --keys 100000 --duration-s "$d"
    echo "== PUT, 50 connections"
    ringkv_run "PUT, 50 conns" --connections 50 --get-percent 0 --keys 100000 --duration-s "$d"
    etcd_run "PUT, 50 conns" --connections 50 --get-percent 0 --keys 100000 --duration-s "$d"
    echo "== the same, etcd's 50 clients sharing one gRPC connection (its client spends less)"
    ringkv_run "PUT, 50 conns, etcd on 1 gRPC conn" --connections 50 --get-percent 0 --keys 100000 --duration-s "$d"
    etcd_run "PUT, 50 conns, etcd on 1 gRPC conn" --connections 50 --grpc-connections 1 --get-percent 0 \
        --keys 100000 --duration-s "$d"
    echo "== GET of 100 written keys, 50 connections (linearizable on both)"
    ringkv_run "GET, 50 conns" --connections 50 --get-percent 100 --keys 100 --preload --duration-s "$d"
    etcd_run "GET, 50 conns" --connections 50 --get-percent 100 --keys 100 --preload --duration-s "$d"
    echo "== the same, etcd's reads serializable (the leader's own state, no quorum round)"
    ringkv_run "GET, 50 conns, etcd serializable" --connections 50 --get-percent 100 --keys 100 --duration-s "$d"
    etcd_run "GET, 50 conns, etcd serializable" --connections 50 --get-percent 100 --keys 100 --serializable --duration-s "$d"
done

python3 - "$rows" "$rounds" <<'EOF_PY'
import statistics, sys
rows, rounds = sys.argv[1], int(sys.argv[2])
# data[name][system][round] = (ops/s, p50 us, servers' CPU us/op, client's CPU us/op)
data, order = {}, []
for line in open(rows):
    name, system, rnd, *figures = line.rstrip("\n").split("\t")
    if name not in data:
        order.append(name)
    data.setdefault(name, {}).setdefault(system, {})[rnd] = tuple(float(f) for f in figures)
med = statistics.median
def cell(runs):
    ops, p50, cpu, client = (med(r[i] for r in runs.values()) for i in range(4))
    return "%s, %d, %.1f, %.1f" % (format(int(ops), ","), p50, cpu, client)
def ratios(name, i):
    """ringkv over etcd for figure i, one ratio per round."""
    r = data[name]
    return [r["ringkv"][k][i] / r["etcd"][k][i] for k in r["etcd"] if k in r["ringkv"]]
def spread(values):
    return "%.2fx (%.2fx to %.2fx)" % (med(values), min(values), max(values))
print()
print("Medians over %d round(s); each ratio is taken within a round (range over the rounds)." % rounds)
print()
print("| workload | ringkv: ops/s, p50 us, servers' CPU us/op, client's CPU us/op | etcd, the same | ringkv/etcd ops/s | ringkv/etcd p50 | ringkv/etcd servers' CPU per op |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name in order:
    r = data[name]
    print("| %s | %s | %s | %s | %s | %s |" % (name, cell(r["ringkv"]), cell(r["etcd"]),
          spread(ratios(name, 0)), spread(ratios(name, 1)), spread(ratios(name, 2))))
EOF_PY
