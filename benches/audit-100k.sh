#!/usr/bin/env bash
# Generates a 100,000-object cluster snapshot (the shape `kubectl get -A -o yaml`
# prints: kind: List, 1,000 items per file) and times `safety-gate audit` on it
# with the shipped policies, reporting wall time and peak RSS.
# With BASELINE=path/to/another/safety-gate, that binary audits the same
# snapshot right after this one (both policy sets), the reports must be
# byte-identical, and the wall-time ratios are printed (before/after, one run).
# Usage: benches/audit-100k.sh [OBJECTS]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-100000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
[ -n "${KEEP:-}" ] && trap - EXIT && echo "snapshot kept in $dir"
mkdir -p "$dir/snapshot"
python3 - "$dir/snapshot" "$objects" <<'PY'
import json, sys
out, total = sys.argv[1], int(sys.argv[2])
per_file = 1000
def deployment(i):
    ns = f"team-{i % 200}"
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"web-{i}", "namespace": ns, "uid": f"uid-{i}", "resourceVersion": str(1000 + i),
                         "labels": {"app": f"web-{i}", "release": "prod"}, "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": f"web-{i}"}},
                     "template": {"metadata": {"labels": {"app": f"web-{i}"}},
                                  "spec": {"containers": [{"name": "web", "image": f"registry.example.com/web:{i % 17}.0",
                                                           "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}},
            "status": {"replicas": 2, "readyReplicas": 2}}
def configmap(i):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cfg-{i}", "namespace": f"team-{i % 200}", "uid": f"uid-{i}"},
            "data": {"mode": "prod", "level": str(i % 5)}}
def rolebinding(i):
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"rb-{i}", "namespace": f"team-{i % 200}", "uid": f"uid-{i}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": f"user-{i}", "apiGroup": "rbac.authorization.k8s.io"}]}
def namespace(i):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{i}", "uid": f"ns-uid-{i}", "labels": {"kubernetes.io/metadata.name": f"team-{i}"}}}
makers = [deployment, configmap, rolebinding]
items_written = 0
file_index = 0
while items_written < total:
    n = min(per_file, total - items_written)
    items = []
    for j in range(n):
        i = items_written + j
        items.append(namespace(i) if i < 200 else makers[i % 3](i))
    with open(f"{out}/snapshot-{file_index:04d}.yaml", "w") as f:
        # JSON is YAML; kubectl prints YAML, which parses the same way.
        f.write("apiVersion: v1\nkind: List\nitems:\n")
        for it in items:
            f.write("- " + json.dumps(it) + "\n")
    items_written += n
    file_index += 1
PY
cargo build --release --quiet --bin safety-gate
bin="${CARGO_TARGET_DIR:-target}/release/safety-gate"
du -sh "$dir" | awk '{print "snapshot size: " $1}'
/usr/bin/time -v "$bin" audit --snapshot "$dir/snapshot" --policies policies --format json > "$dir/report.json" 2> "$dir/time.txt" || true
grep -E "Elapsed|Maximum resident" "$dir/time.txt"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{len(r)} objects evaluated by a policy')" "$dir/report.json"
# The shipped policies guard UPDATE and DELETE, so an audit (objects as if
# created now) evaluates few of them; a CREATE-matching policy shows the cost
# of evaluating every Deployment.
/usr/bin/time -v "$bin" audit --snapshot "$dir/snapshot" --policies tests/fixtures/audit/policies --format json > "$dir/report2.json" 2> "$dir/time2.txt" || true
echo "with a CREATE policy on every Deployment (tests/fixtures/audit/policies):"
grep -E "Elapsed|Maximum resident" "$dir/time2.txt"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{len(r)} objects evaluated by a policy')" "$dir/report2.json"
if [ -n "${BASELINE:-}" ]; then
    wall() { # time.txt -> seconds
        awk -F': ' '/Elapsed/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$1"
    }
    for set in 1 2; do
        policies=policies; [ "$set" = 2 ] && policies=tests/fixtures/audit/policies
        /usr/bin/time -v "$BASELINE" audit --snapshot "$dir/snapshot" --policies "$policies" --format json > "$dir/base$set.json" 2> "$dir/basetime$set.txt" || true
        report="$dir/report.json"; [ "$set" = 2 ] && report="$dir/report2.json"
        ours="$dir/time.txt"; [ "$set" = 2 ] && ours="$dir/time2.txt"
        cmp -s "$report" "$dir/base$set.json" && same="byte-identical" || same="DIFFERENT"
        python3 -c "import sys; o,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{sys.argv[3]}: this build {o:.2f} s, baseline {b:.2f} s, baseline / this build = {b/o:.2f}; reports {sys.argv[4]}')" \
            "$(wall "$ours")" "$(wall "$dir/basetime$set.txt")" "$policies" "$same"
        [ "$same" = byte-identical ] || exit 1
    done
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
