#!/usr/bin/env bash
# Exactly one TLS crypto provider in the dependency tree (all targets, dev and
# build dependencies included): ring, which src/server/tls.rs passes to rustls
# explicitly. A second one (aws-lc-rs, rustls' default, or OpenSSL through
# native-tls) would make rustls' process-wide default ambiguous and doubles the
# audited crypto code; it usually arrives through a new dependency's default
# features.
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree --locked --target all -e normal,build,dev -i "$1" 2>/dev/null; }
if ! tree ring >/dev/null; then
    echo "crypto providers: ring is not in the dependency tree" >&2
    exit 1
fi
for other in aws-lc-rs aws-lc-sys openssl-sys; do
    if tree "$other" >/dev/null; then
        echo "crypto providers: $other is in the dependency tree besides ring:" >&2
        tree "$other" >&2
        exit 1
    fi
done
echo "crypto providers: ring only"
