#!/usr/bin/env bash
# Load test of `safety-gate serve` on loopback, with wrk (apt-get install wrk).
#
# Starts the release binary twice -- once with the shipped policies, once with
# an empty policy directory -- and drives both with three kube-apiserver-shaped
# payloads at concurrency 1, 16 and 64 over HTTPS/HTTP/1.1 with keep-alive
# (what kube-apiserver uses for Service webhooks). Every run is bounded by time
# (DURATION) and by request count (MAX_REQUESTS). Prints req/s, p50, p99,
# errors and the server's peak RSS per run, then the policies/empty ratios.
#
#   benches/load.sh                      # build, then run everything
#   DURATION=5 MAX_REQUESTS=20000 benches/load.sh
#   SAFETY_GATE_BIN=target/release/safety-gate POLICIES=policies benches/load.sh
#
# Only 127.0.0.1 is ever contacted.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10}             # seconds per run
MAX_REQUESTS=${MAX_REQUESTS:-200000} # per run, across all connections
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
PAYLOADS=${PAYLOADS:-"configmap-small deployment-update-20k configmap-1m"}
POLICIES=${POLICIES:-$ROOT/policies}
PORT_POLICIES=${PORT_POLICIES:-18443}
PORT_EMPTY=${PORT_EMPTY:-18444}

command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is required to generate payloads" >&2; exit 2; }

if [[ -z "${SAFETY_GATE_BIN:-}" ]]; then
  cargo build --release --locked --bin safety-gate >&2
  SAFETY_GATE_BIN=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/safety-gate
fi
[[ -x "$SAFETY_GATE_BIN" ]] || { echo "no binary at $SAFETY_GATE_BIN" >&2; exit 2; }
[[ -d "$POLICIES" ]] || { echo "no policy directory $POLICIES" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/empty" "$WORK/payloads"

# kube-apiserver-shaped AdmissionReviews.
python3 - "$WORK/payloads" <<'PY'
import json, sys, copy
out = sys.argv[1]

def review(uid, kind, resource, group, version, name, ns, op, obj, old):
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name, "namespace": ns, "operation": op,
            "userInfo": {"username": "system:serviceaccount:ci:deployer", "uid": "5b6c",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
            "object": obj, "oldObject": old, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions" if op == "UPDATE" else "CreateOptions"},
        },
    }

def configmap(name, data):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "web"}},
            "data": data}

small = review("4d1c0b1e-0000-4000-8000-000000000001", "ConfigMap", "configmaps", "", "v1",
               "web-config", "team-a", "CREATE", configmap("web-config", {"LOG_LEVEL": "info", "PORT": "8080"}), None)

def deployment(image, generation):
    containers = []
    for i in range(3):
        containers.append({
            "name": f"app-{i}", "image": image,
            "ports": [{"containerPort": 8080 + i, "protocol": "TCP", "name": f"http-{i}"}],
            "env": [{"name": f"SETTING_{i}_{j}", "value": f"value-{j}-" + "x" * 40} for j in range(25)],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080 + i}, "periodSeconds": 10},
            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        })
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "uid": "8a3f3c8e-1d2b-4c5d-9e8f-000000000002",
                     "resourceVersion": "123456", "generation": generation,
                     "labels": {"app": "web", "team": "a"},
                     "annotations": {"deployment.kubernetes.io/revision": str(generation)}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": {"metadata": {"labels": {"app": "web", "team": "a"}},
                              "spec": {"containers": containers, "restartPolicy": "Always",
                                       "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst"}}},
        "status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": generation},
    }

update = review("4d1c0b1e-0000-4000-8000-000000000002", "Deployment", "deployments", "apps", "v1",
                "web", "team-a", "UPDATE", deployment("registry.example.com/web:1.2.4", 8),
                deployment("registry.example.com/web:1.2.3", 7))

big = review("4d1c0b1e-0000-4000-8000-000000000003", "ConfigMap", "configmaps", "", "v1",
             "big-config", "team-a", "CREATE",
             configmap("big-config", {f"key-{i:04d}": "y" * 1000 for i in range(1000)}), None)

for name, doc in [("configmap-small", small), ("deployment-update-20k", update), ("configmap-1m", big)]:
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
PY

# wrk script: POST the payload, stop each thread after its share of
# MAX_REQUESTS, and print one machine-readable result line.
cat > "$WORK/post.lua" <<'LUA'
local payload = os.getenv("PAYLOAD_FILE")
local f = assert(io.open(payload, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, */*"
wrk.headers["User-Agent"] = "kube-apiserver-admission"
wrk.path = "/validate?timeout=10s"

local per_thread = tonumber(os.getenv("PER_THREAD_MAX") or "0")
local count = 0
local non200 = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  count = count + 1
  if status ~= 200 then non200 = non200 + 1 end
  if per_thread > 0 and count >= per_thread then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d socket_errors=%d non200=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, bad + e.status))
end
LUA

start_server() { # name port policies-dir
  local name=$1 port=$2 dir=$3
  "$SAFETY_GATE_BIN" serve --dev-cert --listen "127.0.0.1:$port" --policies "$dir" \
    --log-format json --reload-interval 60s >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  LAST_PID=$pid
  for _ in $(seq 1 100); do
    if grep -q 'listening' "$WORK/$name.log"; then return; fi
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 2; }
    sleep 0.1
  done
  echo "server $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 2
}

# Reset the peak-RSS watermark (VmHWM) before a run, read it after.
reset_peak() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true; }
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# Per-decision log lines are off (they cost disk, not evaluation); the log path
# is exercised by the integration tests. LOG=info measures with them.
export RUST_LOG=${RUST_LOG:-"warn,safety_gate::server=info,safety_gate::decision=${LOG:-warn}"}
start_server policies "$PORT_POLICIES" "$POLICIES"; PID_POLICIES=$LAST_PID
start_server empty "$PORT_EMPTY" "$WORK/empty"; PID_EMPTY=$LAST_PID
echo "binary:   $SAFETY_GATE_BIN"
echo "policies: $POLICIES ($(grep -o '"policies":[0-9]*' "$WORK/policies.log" | head -1))"
echo "runs:     ${DURATION}s or $MAX_REQUESTS requests each, wrk over HTTPS/1.1 keep-alive, 127.0.0.1"
echo

declare -A RPS P99 P50
printf "%-10s %-22s %5s %10s %10s %10s %8s %10s\n" set payload conc "req/s" "p50(ms)" "p99(ms)" errors "peakRSS"
for payload in $PAYLOADS; do
  for conc in $CONCURRENCY; do
    for set in policies empty; do
      if [[ $set == policies ]]; then port=$PORT_POLICIES pid=$PID_POLICIES; else port=$PORT_EMPTY pid=$PID_EMPTY; fi
      threads=$(( conc < 2 ? 1 : 2 ))
      # warm-up: connections, allocator, caches
      PAYLOAD_FILE="$WORK/payloads/$payload.json" PER_THREAD_MAX=200 \
        timeout 30 wrk -t"$threads" -c"$conc" -d2s -s "$WORK/post.lua" "https://127.0.0.1:$port" >/dev/null 2>&1 || true
      reset_peak "$pid"
      line=$(PAYLOAD_FILE="$WORK/payloads/$payload.json" PER_THREAD_MAX=$(( MAX_REQUESTS / threads )) \
        timeout $(( DURATION + 30 )) wrk -t"$threads" -c"$conc" -d"${DURATION}s" --timeout 12s \
        -s "$WORK/post.lua" "https://127.0.0.1:$port" | grep '^RESULT')
      eval "$(echo "$line" | sed 's/^RESULT //')"
      rps=$(python3 -c "print(round($requests / $seconds, 1))")
      rss=$(peak_kib "$pid")
      key="$set/$payload/$conc"
      RPS[$key]=$rps; P50[$key]=$p50_us; P99[$key]=$p99_us
      printf "%-10s %-22s %5s %10s %10.3f %10.3f %8s %7.1fMiB\n" "$set" "$payload" "$conc" "$rps" \
        "$(python3 -c "print($p50_us/1000)")" "$(python3 -c "print($p99_us/1000)")" \
        "$(( socket_errors + non200 ))" "$(python3 -c "print($rss/1024)")"
    done
  done
done

echo
echo "policies / empty (throughput ratio; p99 ratio)"
for payload in $PAYLOADS; do
  for conc in $CONCURRENCY; do
    a="policies/$payload/$conc"; b="empty/$payload/$conc"
    python3 -c "print(f'{\"$payload\":22} c={$conc:<3} throughput {${RPS[$a]}/${RPS[$b]}:.3f}  p99 {max(${P99[$a]},1)/max(${P99[$b]},1):.3f}')"
  done
done
echo
echo "targets (issue 3): deployment-update-20k at c=16: throughput ratio >= 0.90, p99 ratio <= 1.10;"
echo "                   peak RSS < 32 MiB at c=64 on deployment-update-20k"
