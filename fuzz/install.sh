#!/usr/bin/env bash
# Installs the pinned cargo-fuzz into .ci/cache/cargo-fuzz-<pin>/ (git-ignored,
# keyed by version so a new pin installs beside the old one) and checks that
# the nightly toolchain libFuzzer needs is there. Prints the cargo-fuzz binary.
# Under CI=true a missing nightly or a failed install fails the run: a fuzz
# step that skipped itself would read as "no findings".
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
root=".ci/cache/cargo-fuzz-$CARGO_FUZZ_VERSION"
bin="$root/bin/cargo-fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly); cargo fuzz needs it for -Zsanitizer and libFuzzer's coverage flags" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  # The stable toolchain builds the tool itself; only the targets need nightly.
  cargo +stable install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$root" >&2
fi
"$bin" --version >&2
echo "$PWD/$bin"
