#!/usr/bin/env python3
"""Writes run-time seed inputs for the fuzz targets whose input format is not
a repository file as it stands: AdmissionReviews built from the PolicyTest
fixture objects, and CEL inputs (site byte, object byte, expression) from
every expression in the shipped and test policies and, when present, in
../shared/vap-corpus. Usage: seeds.py OUT_DIR. Nothing is written into the
repository; OUT_DIR is below the cargo target directory."""

import hashlib
import json
import os
import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "vap-corpus"

# Sites of fuzz_targets/cel_expression.rs (byte 0 of its input).
SITES = {
    "validations": 0,
    "messageExpression": 1,
    "matchConditions": 2,
    "variables": 3,
    "auditAnnotations": 4,
    "jsonPatch": 5,
    "applyConfiguration": 6,
}
TOOL_SITE = 7


def documents(paths):
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.suffix not in (".yaml", ".yml", ".json") or not f.is_file():
                continue
            try:
                for doc in yaml.safe_load_all(f.read_text()):
                    if isinstance(doc, dict):
                        yield f, doc
            except (yaml.YAMLError, UnicodeDecodeError):
                continue


def expressions(node, site=0):
    """(site, expression) for every CEL string below node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expression", "valueExpression") and isinstance(value, str):
                yield site, value
            elif key == "messageExpression" and isinstance(value, str):
                yield SITES["messageExpression"], value
            else:
                yield from expressions(value, SITES.get(key, site))
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item, site)


def review(operation, obj, old=None):
    api_version = obj.get("apiVersion", "v1") if isinstance(obj, dict) else "v1"
    group, _, version = api_version.rpartition("/")
    kind = obj.get("kind", "ConfigMap")
    meta = obj.get("metadata") or {}
    request = {
        "uid": "seed",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": meta.get("name", ""),
        "operation": operation,
        "userInfo": {"username": "seed", "groups": ["system:authenticated"]},
    }
    if meta.get("namespace"):
        request["namespace"] = meta["namespace"]
    if operation == "DELETE":
        request["oldObject"] = obj
    else:
        request["object"] = obj
        if old is not None:
            request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def write(directory, data):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    out = pathlib.Path(sys.argv[1])
    fixtures = [REPO / "tests/policies/fixtures", REPO / "tests/fixtures"]
    if SHARED.is_dir():
        fixtures.append(SHARED / "cases/objects")
    previous = None
    for _, obj in documents(fixtures):
        if not isinstance(obj.get("kind"), str):
            continue
        for operation in ("CREATE", "DELETE"):
            write(out / "admission_review_bytes", json.dumps(review(operation, obj)).encode())
        if previous is not None and previous.get("kind") == obj.get("kind"):
            write(out / "admission_review_bytes",
                  json.dumps(review("UPDATE", obj, previous)).encode())
        previous = obj

    policies = [REPO / "policies", REPO / "tests/policies", REPO / "tests/differential_map/policies",
                REPO / "tests/fixtures", REPO / "examples/policies"]
    if SHARED.is_dir():
        policies.append(SHARED / "docs")
    seen = set()
    for _, doc in documents(policies):
        for site, expression in expressions(doc):
            for s in (site, TOOL_SITE):
                key = (s, expression)
                if key in seen:
                    continue
                seen.add(key)
                # Object byte: the Deployment fixture as an UPDATE (0), the
                # Namespace (1) and ClusterRole (2) fixtures, a Pod as UPDATE (3).
                obj = len(seen) % 4
                write(out / "cel_expression", bytes([s, obj]) + expression.encode())
    for target in ("admission_review_bytes", "cel_expression"):
        count = len(os.listdir(out / target)) if (out / target).is_dir() else 0
        print(f"seeds: {target}: {count} inputs", file=sys.stderr)


if __name__ == "__main__":
    main()
