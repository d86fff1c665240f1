#!/usr/bin/env bash
# safety-gate next to the null webhook of ../shared/bench/floor, in one interleaved run
# (issue 15's table): gate ÷ null for req/s, p99 and server CPU per request, peak RSS of
# both, and optionally valgrind instructions per request.
#
#   benches/floor.sh                                  # ~7 min once built: 2 payloads x h2/h1 x c16/c64 x 3 reps
#   INSTR=1 benches/floor.sh                          # + valgrind instructions/request (~5 min more)
#   REPS=5 DURATION=10 benches/floor.sh               # the longer protocol
#   PAYLOADS=deploy PROTOS=h2 CONCS=16 REPS=3 benches/floor.sh
#   BUILD=0 GATE_BIN=path/to/safety-gate benches/floor.sh   # another gate build (e.g. before/after)
#
# The harness is ../shared/bench/floor (the repository is checked out beside ../shared). It is
# used, not copied into this repository: its run.sh writes target/, results/ and
# payloads/generated/ beside itself and ../shared has no write bits, so the script mirrors it
# into a scratch directory under cargo's target directory (FLOOR_WORK) and runs it there.
# The null webhook is built from that copy (ring, like safety-gate); the gate is started
# through the harness's webhook-variant.sh with the shipped policies.
#
# Machine: h2load, the server and whatever else runs share the cores. Absolute numbers drift;
# the ratios (gate and null measured back to back at every point, repetitions interleaved)
# are what to quote, with the load average printed at the start and end.
#
# Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

FLOOR_SRC=${FLOOR_SRC:-$ROOT/../shared/bench/floor}
BUILD=${BUILD:-1}
INSTR=${INSTR:-0}
POLICIES=${POLICIES:-$ROOT/policies}
export PAYLOADS=${PAYLOADS:-"small deploy"}
export PROTOS=${PROTOS:-"h2 h1"}
export CONCS=${CONCS:-"16 64"}
export REPS=${REPS:-3}
export DURATION=${DURATION:-5}

[ -x "$FLOOR_SRC/run.sh" ] || {
    echo "no null-webhook harness at $FLOOR_SRC (set FLOOR_SRC; the repository expects ../shared beside it)" >&2
    exit 2
}
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 2; }

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FLOOR_WORK=${FLOOR_WORK:-$TARGET_DIR/floor-bench}
FLOOR=$FLOOR_WORK/floor

# Mirror the harness (sources only: its target/ from earlier runs stays).
mkdir -p "$FLOOR"
cp -rT "$FLOOR_SRC" "$FLOOR"
chmod -R u+w "$FLOOR"

if [ "$BUILD" = 1 ]; then
    echo "== build: safety-gate (release) and null-webhook (release, ring)"
    cargo build --release --locked --bin safety-gate
    (cd "$FLOOR" && CARGO_TARGET_DIR="$FLOOR/target" \
        cargo build --release -q --no-default-features --features ring -p null-webhook)
fi
GATE_BIN=${GATE_BIN:-$TARGET_DIR/release/safety-gate}
NULL_BIN=${NULL_BIN:-$FLOOR/target/release/null-webhook}
for b in "$GATE_BIN" "$NULL_BIN"; do [ -x "$b" ] || { echo "no binary at $b" >&2; exit 2; }; done
GATE_BIN=$(realpath "$GATE_BIN"); NULL_BIN=$(realpath "$NULL_BIN"); POLICIES=$(realpath "$POLICIES")

OUT=${OUT:-$FLOOR_WORK/results/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
load_start=$(cat /proc/loadavg)

# The harness's A/B mode: every point runs null then gate, repetition-major.
(cd "$FLOOR" && WEBHOOK_BIN="$GATE_BIN" WEBHOOK_POLICIES="$POLICIES" \
    VARIANTS="null=$NULL_BIN gate=./webhook-variant.sh" SERVER_BIN="$NULL_BIN" \
    BUILD=0 BENCH=0 INSTR=none EXTRA_PARSE="" OUT="$OUT" ./run.sh) > "$OUT/run.log" 2>&1 || {
    echo "the harness failed; its output:" >&2; cat "$OUT/run.log" >&2; exit 1
}
grep -E '^(null|gate)-' "$OUT/run.log" || true
load_end=$(cat /proc/loadavg)

if [ "$INSTR" = 1 ]; then
    echo "== instructions per request (valgrind cachegrind, c=1, one connection, handshake excluded)"
    command -v valgrind >/dev/null || { echo "valgrind is required for INSTR=1" >&2; exit 2; }
    # null: the harness's own server counts (all of its payloads, h2 and h1).
    (cd "$FLOOR" && SERVER_BIN="$NULL_BIN" scripts/instr.sh "$OUT" server) >&2
    empty=$(mktemp -d)
    echo "variant,payload,proto,instructions_per_request" > "$OUT/instr-gate.csv"
    for payload in $PAYLOADS; do
        for proto in $PROTOS; do
            line=$(cd "$FLOOR" && WEBHOOK_BIN="$GATE_BIN" WEBHOOK_POLICIES="$POLICIES" scripts/instr-webhook.sh "$payload" "$proto")
            echo "gate,$line" >> "$OUT/instr-gate.csv"
        done
        line=$(cd "$FLOOR" && WEBHOOK_BIN="$GATE_BIN" WEBHOOK_POLICIES="$empty" scripts/instr-webhook.sh "$payload" h2)
        echo "gate-empty,$line" >> "$OUT/instr-gate.csv"
    done
    rmdir "$empty"
fi

echo
echo "== gate ÷ null (medians of $REPS x ${DURATION}s; results in $OUT)"
python3 - "$OUT" "$load_start" "$load_end" "$(nproc)" <<'PY'
import csv, os, statistics, sys
out, load_start, load_end, ncpu = sys.argv[1:5]
rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
def med(rs, col):
    xs = [float(r[col]) for r in rs if r[col] not in ("", "nan")]
    return statistics.median(xs) if xs else float("nan")
points = []
for r in rows:
    p = (r["payload"], r["proto"], int(r["conc"]))
    if p not in points:
        points.append(p)
sizes = {"small": "small ConfigMap CREATE 1.6 KB", "deploy": "Deployment UPDATE 22.6 KB"}
bad = sum(int(r["failed"]) + int(r["errored"]) + int(r["non2xx"]) for r in rows)
print(f"load average (1/5/15 min) at start: {' '.join(load_start.split()[:3])}, at end: {' '.join(load_end.split()[:3])}; {ncpu} CPUs; failed/errored/non-2xx requests: {bad}")
print()
print("| payload | proto/conc | req/s gate ÷ null | p99 gate ÷ null | server CPU/req gate ÷ null (µs) | peak RSS MiB gate / null | other tenants CPU % |")
print("|---|---|---:|---:|---:|---:|---:|")
for p in points:
    g = [r for r in rows if r["variant"] == "gate" and (r["payload"], r["proto"], int(r["conc"])) == p]
    n = [r for r in rows if r["variant"] == "null" and (r["payload"], r["proto"], int(r["conc"])) == p]
    if not g or not n:
        continue
    ratio = lambda col: med(g, col) / med(n, col)
    print(f"| {sizes.get(p[0], p[0])} | {p[1]} c{p[2]} | {ratio('rps'):.2f} | {ratio('p99_us'):.2f} | "
          f"{ratio('srv_cpu_us_per_req'):.2f} ({med(g, 'srv_cpu_us_per_req'):.0f} vs {med(n, 'srv_cpu_us_per_req'):.0f}) | "
          f"{med(g, 'rss_kb') / 1024:.1f} / {med(n, 'rss_kb') / 1024:.1f} | "
          f"{med(g + n, 'foreign_cpu_pct'):.0f} |")
peak = lambda v: max(float(r["rss_kb"]) for r in rows if r["variant"] == v) / 1024
print()
print(f"peak RSS over all runs: gate {peak('gate'):.1f} MiB, null {peak('null'):.1f} MiB")
ig, isv = os.path.join(out, "instr-gate.csv"), os.path.join(out, "instr-server.csv")
if os.path.exists(ig) and os.path.exists(isv):
    null = {(r["payload"], r["proto"]): int(r["instructions_per_request"]) for r in csv.DictReader(open(isv))}
    gate = {(r["variant"], r["payload"], r["proto"]): int(r["instructions_per_request"]) for r in csv.DictReader(open(ig))}
    print()
    print("| payload | proto | instructions/request gate | null | gate ÷ null | gate, empty policy directory |")
    print("|---|---|---:|---:|---:|---:|")
    for (v, payload, proto), n in gate.items():
        if v != "gate":
            continue
        e = gate.get(("gate-empty", payload, proto))
        nn = null.get((payload, proto))
        print(f"| {sizes.get(payload, payload)} | {proto} | {n:,} | {nn:,} | {n / nn:.2f} | {f'{e:,}' if e else ''} |")
PY
