#!/usr/bin/env bash
# Builds the real control plane the end-to-end tests run against, from Go
# modules pinned in e2e/go.mod (Kubernetes) and e2e/etcd/go.mod (etcd), plus
# the admission oracle (e2e/oracle) on the same release.
#
#   e2e/build.sh            build what is missing, print the binary folder
#
# Output: e2e/.bin/<release>-<hash of the go.mod/go.sum files>/{kube-apiserver,
# kube-controller-manager,kubectl,etcd,oracle}. The folder name changes when a
# pin changes, so a cached folder is never stale; a second run costs seconds.
# A failed build names the module and exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The pin is either a one-line `require k8s.io/kubernetes vX` or a line of a require block.
release=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3; exit} $1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
[ -n "$release" ] || { echo "e2e/build.sh: no k8s.io/kubernetes pin in e2e/go.mod" >&2; exit 1; }
key=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | sha256sum | cut -c1-12)
out="$here/.bin/$release-$key"
mkdir -p "$out"
export GOFLAGS=-mod=mod
# The version kube-apiserver and kubectl report (`kubectl version`, /version),
# as the release's own build sets it.
minor=$(echo "$release" | cut -d. -f2)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
build() { # name module-dir package...
  local name=$1 dir=$2; shift 2
  if [ -x "$out/$name" ]; then return 0; fi
  local start=$SECONDS
  echo "e2e/build.sh: building $name ($*) ..." >&2
  if ! (cd "$dir" && go build -ldflags "$ldflags" -o "$out/$name.tmp" "$@") >&2; then
    echo "e2e/build.sh: FAILED to build $name from module $(awk '$1=="module"{print $2}' "$dir/go.mod") ($*)" >&2
    exit 1
  fi
  mv "$out/$name.tmp" "$out/$name"
  echo "e2e/build.sh: built $name in $((SECONDS - start)) s" >&2
}
build etcd "$here/etcd" .
build kube-apiserver "$here" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$here" k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl "$here" k8s.io/kubernetes/cmd/kubectl
if [ -d "$here/oracle" ]; then
  # The oracle is our code: rebuild it when its source changes.
  src_key=$(find "$here/oracle" -name '*.go' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-12)
  if [ "$(cat "$out/oracle.src" 2>/dev/null)" != "$src_key" ]; then rm -f "$out/oracle"; fi
  build oracle "$here" ./oracle
  # Replace, never truncate: a build.sh run at the same time (tests run in
  # parallel) must not read an empty key and delete the oracle in use.
  echo "$src_key" > "$out/oracle.src.$$" && mv -f "$out/oracle.src.$$" "$out/oracle.src"
fi
echo "$out"
