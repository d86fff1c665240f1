#!/usr/bin/env bash
# Coverage-guided fuzzing of safety-gate with cargo fuzz (libFuzzer).
#
#   bash fuzz/run.sh short [TARGET...]   CI: every target for FUZZ_SECONDS (30) each
#   bash fuzz/run.sh long  [TARGET...]   1,000,000 inputs per target (FUZZ_RUNS)
#
# Targets run one after another with one job (the machine has 2 cores shared
# with the build and the other tests). Each prints a summary row: inputs run,
# wall time, inputs/s, libFuzzer's final cov/ft, corpus size, findings. Any
# crash, panic, timeout, out-of-memory, or an input that takes more than 1 s
# when re-run alone, fails the script (after every target ran) and leaves the
# input in fuzz/artifacts/TARGET/; reproduce with
#   $TARGET_DIR/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/FILE
#
# Corpora grow in fuzz/corpus/TARGET (git-ignored). Seeds are read where they
# are: the repository's policies and fixtures, ../shared/vap-corpus when it is
# there, and inputs fuzz/seeds.py derives from both into the target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-short}
shift || true
case "$mode" in
  short | long) ;;
  *) echo "usage: fuzz/run.sh short|long [TARGET...]" >&2; exit 2 ;;
esac

cargo_fuzz=$(bash fuzz/install.sh)
export PATH="$(dirname "$cargo_fuzz"):$PATH"

# The fuzz crate must fuzz the dependency versions that ship: its Cargo.lock
# may only add packages (libfuzzer-sys, arbitrary), never pick other versions.
python3 - <<'EOF'
import sys, tomllib
root = {p["name"]: p["version"] for p in tomllib.load(open("Cargo.lock", "rb"))["package"]}
fuzz = {p["name"]: p["version"] for p in tomllib.load(open("fuzz/Cargo.lock", "rb"))["package"]}
differ = [f"{n} {root[n]} (Cargo.lock) vs {v} (fuzz/Cargo.lock)" for n, v in fuzz.items() if n in root and root[n] != v]
if differ:
    sys.exit("fuzz: fuzz/Cargo.lock differs from Cargo.lock; copy Cargo.lock over it and rebuild:\n  " + "\n  ".join(differ))
EOF

target_dir=${CARGO_TARGET_DIR:-$PWD/fuzz/target}
export CARGO_TARGET_DIR=$target_dir
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release

# -s none: the crate forbids unsafe code, so AddressSanitizer would mostly
# watch the dependencies' unsafe, at a cost in build and run time the CI
# budget cannot spare; panics, timeouts and memory growth (-rss_limit_mb)
# are caught by libFuzzer itself. -malloc_limit_mb
# needs a sanitizer's malloc hooks: FUZZ_SANITIZER=address turns them on.
sanitizer=${FUZZ_SANITIZER:-none}
t0=$SECONDS
cargo +nightly fuzz build --fuzz-dir fuzz -O -s "$sanitizer" >&2
echo "fuzz: built the targets (-s $sanitizer) in $((SECONDS - t0)) s" >&2

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

seeds=$target_dir/fuzz-seeds
rm -rf "$seeds"
python3 fuzz/seeds.py "$seeds"
shared=../shared/vap-corpus
if [ ! -d "$shared" ]; then
  echo "fuzz: $shared is missing; its policies and suites are not among the seeds" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
fi

# Seed directories per target (read, never written: libFuzzer adds new inputs
# to the first directory only).
seed_dirs() {
  local dirs=()
  case "$1" in
    admission_review_bytes) dirs=("$seeds/admission_review_bytes" examples benches/fixtures) ;;
    admission_review_structured) dirs=() ;;
    policy_documents) dirs=(policies tests/policies tests/differential_map/policies
      tests/fixtures examples/policies "$shared/docs" "$shared/bindings" "$shared/params") ;;
    cel_expression) dirs=("$seeds/cel_expression") ;;
    review_manifests) dirs=(tests/fixtures tests/policies/fixtures examples "$shared/cases/objects"
      "$shared/cases/cluster") ;;
    policy_test_files) dirs=(examples tests/fixtures/params tests/policies "$shared/cases") ;;
  esac
  for d in "${dirs[@]}"; do
    if [ -d "$d" ]; then echo "$d"; fi
  done
}

# Largest input per target: the biggest review body or policy file that
# exercises something new is far below these; more only slows each input.
# PolicyTest suites get 4 KB: a few cases each (the repository's suites of
# 20-90 KB are cut to their first cases), since every input loads its
# policies and cluster state from disk.
max_len() {
  case "$1" in
    cel_expression | policy_test_files) echo 4096 ;;
    *) echo 16384 ;;
  esac
}

if [ "$mode" = short ]; then
  budget=(-max_total_time="${FUZZ_SECONDS:-30}")
else
  budget=(-runs="${FUZZ_RUNS:-1000000}")
fi

# -timeout=3 (FUZZ_TIMEOUT): an input still running after 3 s fails at once.
# The bar is 1 s, but libFuzzer's timer is wall-clock and this 2-core machine
# is shared, so a 1 s limit would flake on inputs that take 0.4 s alone;
# inputs over 1 s are written as slow-unit-* (-report_slow_units=1) and re-run
# alone below, where more than 1 s in the fastest of three runs is a finding.
# A long run beside other builds needs a larger FUZZ_TIMEOUT: at a load
# average of 8 an input of 0.2 s alone took 3 s.
# -rss_limit_mb=2048: the process's RSS (libFuzzer samples it every second);
# the targets hold the shipped policies, the fixtures and the corpus in well
# under 512 MB, so growth past 2 GB is an input that allocates without bound.
# -close_fd_mask=3: the review and test commands print their reports; the
# panic message of a crash is shown by re-running the input below.
flags=(-timeout="${FUZZ_TIMEOUT:-3}" -rss_limit_mb=2048 -report_slow_units=1 -close_fd_mask=3
  -print_final_stats=1 -dict=fuzz/policies.dict)
if [ "$sanitizer" != none ]; then flags+=(-malloc_limit_mb=1024); fi

logs=$target_dir/fuzz-logs
mkdir -p "$logs"
failed=()
printf '%-28s %10s %8s %8s %7s %7s %7s  %s\n' target inputs seconds inputs/s cov ft corpus findings
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  artifacts=fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  mapfile -t extra < <(seed_dirs "$target")
  log=$logs/$target.log
  start=$SECONDS
  status=0
  "$bin_dir/$target" "${flags[@]}" "${budget[@]}" -max_len="$(max_len "$target")" \
    -artifact_prefix="$artifacts/" "$corpus" "${extra[@]}" >"$log" 2>&1 || status=$?
  wall=$((SECONDS - start))
  findings=()
  if [ "$status" -ne 0 ]; then
    findings+=("libFuzzer exit $status: $(grep -m1 -E '^==[0-9]+== ERROR|deadly signal|timeout|out-of-memory' "$log" || tail -1 "$log")")
  fi
  # Slow inputs seen under load: a finding only if slow alone too.
  for slow in "$artifacts"/slow-unit-*; do
    [ -e "$slow" ] || continue
    ms=
    for _ in 1 2 3; do
      run_ms=$("$bin_dir/$target" -runs=1 -close_fd_mask=3 "$slow" 2>&1 |
        sed -n 's/^Executed .* in \([0-9]*\) ms$/\1/p' | tail -1)
      if [ -z "$ms" ] || [ "${run_ms:-0}" -lt "$ms" ]; then ms=${run_ms:-0}; fi
    done
    if [ "${ms:-0}" -gt 1000 ]; then
      findings+=("$slow takes $ms ms alone (fastest of 3)")
    else
      rm -f "$slow"
    fi
  done
  for crash in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
    [ -e "$crash" ] || continue
    echo "--- $crash (re-run without -close_fd_mask):" >&2
    "$bin_dir/$target" -runs=1 -timeout=3 "$crash" 2>&1 | grep -v '^INFO' | head -40 >&2 || true
  done
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  size=$(find "$corpus" -type f | wc -l)
  printf '%-28s %10s %8s %8s %7s %7s %7s  %s\n' "$target" "${execs:-?}" "$wall" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "$size" "${findings[*]:-none}"
  if [ ${#findings[@]} -gt 0 ]; then failed+=("$target"); fi
done
rm -rf fuzz/scratch
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}; logs in $logs, inputs in fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no findings ($mode run, logs in $logs)"
