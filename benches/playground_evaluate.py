#!/usr/bin/env python3
"""Time of the playground's POST /api/evaluate: the shipped policy library
(GET /api/library) on examples/deployment.yaml, as CREATE and UPDATE on
/validate and CREATE on /mutate.

Starts `BIN playground --listen 127.0.0.1:0`, sends each body --requests times
one after the other (a new loopback connection each, as the page's fetch may),
and prints per case the client-side round trip (median, p90, max) and the
engine's own time (`decision.elapsedMicros`, median). The whole request is
measured: JSON decoding, loading and compiling the six policies (the page
sends them with every edit), building the request, evaluating with the trace
on, and encoding the answer.

    cargo build --release --locked
    python3 benches/playground_evaluate.py --bin target/release/safety-gate
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent


def post(url, body):
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the safety-gate binary")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    child = subprocess.Popen(
        [args.bin, "playground", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base = child.stdout.readline().strip().removeprefix("playground: ").rstrip("/")
        with urllib.request.urlopen(base + "/api/library") as answer:
            library = json.load(answer)["policies"]
        deployment = (REPO / "examples/deployment.yaml").read_text()
        cases = {
            "CREATE /validate": {"object": deployment},
            "UPDATE /validate": {"object": deployment, "oldObject": deployment},
            "CREATE /mutate": {"object": deployment, "endpoint": "mutate"},
        }
        print(
            f"{len(library)} policies, examples/deployment.yaml, "
            f"{args.requests} requests per case, one at a time"
        )
        for name, request in cases.items():
            body = json.dumps({"policies": library, "request": request}).encode()
            first = post(base + "/api/evaluate", body)
            if "decision" not in first:
                raise SystemExit(f"{name}: no decision: {first}")
            round_trips, engine = [], []
            for _ in range(args.requests):
                started = time.perf_counter()
                answer = post(base + "/api/evaluate", body)
                round_trips.append((time.perf_counter() - started) * 1000)
                engine.append(answer["decision"]["elapsedMicros"])
            round_trips.sort()
            p90 = round_trips[int(len(round_trips) * 0.9) - 1]
            print(
                f"{name}: allowed={first['decision']['allowed']}, "
                f"round trip median {statistics.median(round_trips):.2f} ms, "
                f"p90 {p90:.2f} ms, max {round_trips[-1]:.2f} ms; "
                f"engine median {statistics.median(engine):.0f} µs "
                f"({len(body)} bytes sent)"
            )
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()
