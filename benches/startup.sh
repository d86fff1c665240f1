#!/usr/bin/env bash
# Issue 15's start-up target: from exec to ready with 100 heavy policies
# (target ≤ 200 ms). The 100 policies are the shipped library's six
# GatePolicies, each copied under its own name (and audit annotation keys)
# until there are 100 (every
# copy compiles in full: expressions are parsed and checked per policy).
# Times, as medians of ROUNDS (default 7):
#   - `safety-gate check DIR` (load and compile, then exit);
#   - `safety-gate serve` until the admin port's /readyz answers 200.
# With INSTR=1, also callgrind's instruction count of one `check` run. With
# BASELINE=path/to/another/safety-gate, that binary is timed too, interleaved
# with this one, and the ratios printed (before/after a change, one run).
# Usage: benches/startup.sh [POLICIES]   (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100}
rounds=${ROUNDS:-7}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin safety-gate
bin="$target/release/safety-gate"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/policies"
python3 - "$dir/policies" "$count" <<'PY'
import pathlib, re, sys
out, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
files = sorted(pathlib.Path("policies").glob("*.yaml"))
for i in range(count):
    src = files[i % len(files)]
    text = src.read_text()
    # metadata.name is the only line at two spaces' indent named `name:`.
    text, n = re.subn(r"(?m)^  name: (\S+)$", lambda m: f"  name: {m.group(1)}-{i}", text, count=1)
    assert n == 1, src
    # Audit annotation keys must be unique across the loaded policies.
    text = re.sub(r"(?m)^(    - key: )(\S+)$", lambda m: f"{m.group(1)}{m.group(2)}-{i}", text)
    (out / f"{i:03d}-{src.name}").write_text(text)
PY
"$bin" check "$dir/policies" >/dev/null || { echo "the generated policies do not load" >&2; exit 1; }
echo "$count policies in $dir/policies; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$bin" "$dir/policies" "$rounds" "${BASELINE:-}" <<'PY'
import socket, subprocess, sys, time, statistics
bin, policies, rounds, baseline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

def check(bin):
    t = time.perf_counter()
    subprocess.run([bin, "check", policies], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t

def serve(bin):
    admin, tls = free_port(), free_port()
    t = time.perf_counter()
    p = subprocess.Popen([bin, "serve", "--policies", policies, "--dev-cert",
                          "--listen", f"127.0.0.1:{tls}", "--admin-listen", f"127.0.0.1:{admin}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready(admin):
            if p.poll() is not None:
                sys.exit("serve exited before it was ready")
            if time.perf_counter() - t > 30:
                sys.exit("serve was not ready within 30 s")
            time.sleep(0.002)
        return time.perf_counter() - t
    finally:
        p.terminate(); p.wait()

bins = [("this build", bin)] + ([("baseline", baseline)] if baseline else [])
times = {label: ([], []) for label, _ in bins}
for _ in range(rounds):
    for label, b in bins:
        times[label][0].append(check(b)); times[label][1].append(serve(b))
ms = lambda xs: f"median {statistics.median(xs)*1e3:.0f} ms (min {min(xs)*1e3:.0f}, max {max(xs)*1e3:.0f})"
for label, (c, s) in times.items():
    print(f"{label}: check: {ms(c)}; serve until /readyz 200: {ms(s)}  [{rounds} rounds, interleaved]")
if baseline:
    (c, s), (bc, bs) = times["this build"], times["baseline"]
    med = statistics.median
    print(f"this build / baseline: check {med(c)/med(bc):.2f}, serve until ready {med(s)/med(bs):.2f}")
PY
if [ -n "${INSTR:-}" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" check "$dir/policies" >/dev/null 2>"$dir/cg.log"
    echo "check, instructions (callgrind): $(grep -E '^(summary|totals):' "$dir/cg.out" | head -1 | awk '{print $2}')"
    if [ -n "${KEEP_PROFILE:-}" ]; then cp "$dir/cg.out" "$KEEP_PROFILE"; echo "profile kept in $KEEP_PROFILE"; fi
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
