#!/usr/bin/env bash
# Instructions per review of the Deployment UPDATE with 5 policies loaded and
# with 1,000 loaded of which the same 5 match (benches/scale.rs), counted by
# valgrind (callgrind) so the machine's load does not move them:
# (I(N2) - I(N1)) / (N2 - N1) for each set, loading excluded.
# Usage: benches/scale-instr.sh [N1 N2]   (default 20 120)
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-20}
n2=${2:-120}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
cargo bench --bench scale --no-run --quiet 2>/dev/null
target=${CARGO_TARGET_DIR:-target}
bin=$(ls -t "$target"/release/deps/scale-* | grep -v '\.d$' | head -1)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
instr() { # set n
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$1.$2" "$bin" --instr "$1" "$2" 2>"$dir/log.$1.$2" >/dev/null
    grep -E '^(summary|totals):' "$dir/cg.$1.$2" | head -1 | awk '{print $2}'
}
declare -A per
for set in 5 1000; do
    a=$(instr "$set" "$n1")
    b=$(instr "$set" "$n2")
    per[$set]=$(( (b - a) / (n2 - n1) ))
    echo "$set loaded: $(( per[$set] )) instructions per review (I($n2)=$b, I($n1)=$a)"
done
python3 -c "import sys; print(f'1000 loaded / 5 loaded = {int(sys.argv[2])/int(sys.argv[1]):.3f}')" "${per[5]}" "${per[1000]}"
