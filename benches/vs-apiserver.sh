#!/usr/bin/env bash
# The gate's engine next to kube-apiserver's own ValidatingAdmissionPolicy plugin, on the
# same request, in one run (issue 15): CPU per request to decode the AdmissionReview and
# evaluate the policies.
#
#   benches/vs-apiserver.sh                    # ~2 min once built: 3 interleaved rounds of 3 s each side
#   REPS=5 BENCHTIME=5 benches/vs-apiserver.sh
#
# - Request: the Deployment UPDATE (22.6 KB, object and oldObject) of ../shared/bench/floor,
#   made by its payload generator (nothing is copied into the repository).
# - kube-apiserver: e2e/oracle's BenchmarkValidatingPolicy (k8s.io/apiserver's plugin at the
#   release pinned in e2e/go.mod) with the shipped policies rendered as
#   ValidatingAdmissionPolicy + binding by `safety-gate manifests --native`; it decodes the
#   body into admission/v1 + unstructured and runs Validate. Policies that do not render
#   (they mutate or read cluster state) are in neither side's set for the main row.
# - gate: benches/vs_apiserver.rs, `admission::review` (decode, evaluate, encode the
#   response) with the same GatePolicies; a second row with the whole shipped library.
# Both loops run on one thread; CPU is the process's user+system time over the loop per
# request, so Go's concurrent garbage collector is counted. A review that must be denied
# (the selector changed) checks on both sides that the policies are in force.
#
# Only local processes; nothing is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REPS=${REPS:-3}
BENCHTIME=${BENCHTIME:-3}
FLOOR_SRC=${FLOOR_SRC:-$ROOT/../shared/bench/floor}
POLICIES=${POLICIES:-$ROOT/policies}

command -v go >/dev/null || { echo "go is required (e2e/oracle)" >&2; exit 2; }
[ -f "$FLOOR_SRC/payloads/gen_payloads.py" ] || { echo "no $FLOOR_SRC/payloads/gen_payloads.py (set FLOOR_SRC)" >&2; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== build: safety-gate (release), the gate's timing loop, the oracle's test binary" >&2
cargo build --release --locked --bin safety-gate >&2
cargo bench --locked --bench vs_apiserver --no-run >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
GATE=$TARGET_DIR/release/safety-gate
(cd e2e && GOFLAGS=-mod=mod go test -c -o "$WORK/oracle.test" ./oracle) >&2

python3 "$FLOOR_SRC/payloads/gen_payloads.py" "$WORK/payloads" >/dev/null
"$GATE" manifests --native --policies "$POLICIES" > "$WORK/native.yaml" 2> "$WORK/native.err" || {
    cat "$WORK/native.err" >&2; exit 1
}
mkdir -p "$WORK/rendered"
python3 - "$WORK" "$POLICIES" <<'PY'
import copy, json, pathlib, sys, yaml
work, policies = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = [d for d in yaml.safe_load_all(open(work / "native.yaml")) if d]
vaps = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
names = {v["metadata"]["name"] for v in vaps}
# The GatePolicy files whose policy rendered: the gate's side evaluates exactly these.
kept = []
for f in sorted(policies.rglob("*.yaml")):
    for d in yaml.safe_load_all(open(f)):
        if d and d.get("kind") == "GatePolicy" and d["metadata"]["name"] + ".safety-gate.dev" in names:
            (work / "rendered" / f.name).write_text(f.read_text())
            kept.append(d["metadata"]["name"])
review = json.load(open(work / "payloads" / "deploy.json"))
denied = copy.deepcopy(review)
denied["request"]["object"]["spec"]["selector"]["matchLabels"]["app"] = "changed-by-the-benchmark"
compact = lambda v: json.dumps(v, separators=(",", ":"))
(work / "review.json").write_text(compact(review))
(work / "denied.json").write_text(compact(denied))
case = {"policies": vaps, "bindings": bindings, "review": review, "deniedReview": denied}
(work / "case.json").write_text(compact(case))
print(f"policies rendered and compared: {', '.join(kept)} ({len(vaps)} ValidatingAdmissionPolicies with break-glass companions); "
      f"request: Deployment UPDATE {len(compact(review)):,} bytes", file=sys.stderr)
PY

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
RES=$WORK/results.txt
: > "$RES"
for rep in $(seq "$REPS"); do
    for bench in ValidatingPolicy ValidatingPolicyEvaluateOnly; do
        line=$(cd e2e/oracle && ORACLE_BENCH_CASE="$WORK/case.json" "$WORK/oracle.test" \
            -test.run '^$' -test.bench "^Benchmark$bench\$" -test.benchtime "${BENCHTIME}s" -test.count 1 |
            grep "^Benchmark$bench-")
        who=apiserver; [ "$bench" = ValidatingPolicyEvaluateOnly ] && who=apiserver-evaluate-only
        echo "$who $line" | tee -a "$RES" >&2
    done
    for set in rendered shipped; do
        dir=$WORK/rendered; [ "$set" = shipped ] && dir=$POLICIES
        line=$(VS_BODY="$WORK/review.json" VS_DENIED="$WORK/denied.json" VS_POLICIES="$dir" VS_SECONDS="$BENCHTIME" \
            cargo bench --locked -q --bench vs_apiserver 2>/dev/null | grep '^iterations=')
        echo "gate-$set $line" | tee -a "$RES" >&2
    done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RES" "$load_start" "$load_end" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who = line.split()[0]
    # gate: "iterations=N ns/op=X cpu-ns/op=Y"; go test: "... X ns/op ... Y cpu-ns/op"
    ns = re.search(r" ns/op=([\d.]+)", line) or re.search(r"([\d.]+) ns/op", line)
    cpu = re.search(r"cpu-ns/op=([\d.]+)", line) or re.search(r"([\d.]+) cpu-ns/op", line)
    rows.setdefault(who, []).append((float(ns.group(1)), float(cpu.group(1))))
med = lambda who, i: statistics.median(r[i] for r in rows[who])
api = med("apiserver", 1)
print(f"load average at start: {sys.argv[2]}, at end: {sys.argv[3]}; medians of {len(rows['apiserver'])} interleaved rounds")
print()
print("| engine (Deployment UPDATE 22.6 KB) | wall µs/request | CPU µs/request | CPU ÷ kube-apiserver |")
print("|---|---:|---:|---:|")
labels = {"apiserver": "kube-apiserver v1.37.2 ValidatingAdmissionPolicy plugin, rendered policies",
          "apiserver-evaluate-only": "the same, body decoded before the timing (Validate alone)",
          "gate-rendered": "safety-gate `admission::review`, the same policies",
          "gate-shipped": "safety-gate, the whole shipped library"}
for who in ("apiserver", "apiserver-evaluate-only", "gate-rendered", "gate-shipped"):
    if who in rows:
        print(f"| {labels[who]} | {med(who, 0) / 1000:.1f} | {med(who, 1) / 1000:.1f} | {med(who, 1) / api:.2f} |")
PY
