#!/usr/bin/env python3
"""Draws a soak run (benches/soak.py) as an SVG: RSS, p99 latency, open file
descriptors and tokio tasks over time, one panel each.

  benches/soak_plot.py soak.csv --summary soak.json --out docs/soak.svg

soak.csv is the per-second CSV the soak writes (--out), soak.json its summary
(--summary); the summary's numbers go into the title and the idle baselines
into the descriptor and task panels.

matplotlib comes from PyPI at the versions pinned in
benches/requirements-plot.txt. When this Python cannot import it, the script
makes a virtual environment in PLOT_VENV (default
~/.cache/safety-gate/plot-venv), installs the pinned requirements there with
pip and runs itself again inside it, so a fresh machine needs only python3
with venv and pip.

The SVG is reproducible: no creation date, fixed element ids.
"""

import argparse
import csv
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements-plot.txt")


def ensure_matplotlib():
    """Imports matplotlib, or re-runs this script in a venv that has the pinned one."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("SOAK_PLOT_IN_VENV"):
        sys.exit("matplotlib is still missing inside %s" % sys.prefix)
    venv = os.environ.get("PLOT_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "safety-gate", "plot-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print("soak_plot: creating %s" % venv, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", REQUIREMENTS], check=True)
    env = dict(os.environ, SOAK_PLOT_IN_VENV="1")
    os.execve(python, [python, os.path.abspath(__file__)] + sys.argv[1:], env)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit("%s has no samples" % path)
    columns = {}
    for name in rows[0]:
        columns[name] = [float(r[name]) for r in rows]
    return columns


def title(summary):
    if not summary:
        return "safety-gate soak"
    return ("safety-gate soak %s: %d s, %s requests (%s abandoned), %d failed, %d wrong\n"
            "%s" % (summary.get("date", "?"), summary["seconds"], format(summary["requests"], ","),
                    format(summary["abandoned"], ","), summary["failures"], summary.get("wrong", 0),
                    summary.get("machine", "")))


def draw(columns, summary, out):
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "safety-gate-soak"
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["font.size"] = 9
    seconds = columns["seconds"]
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    rss = [k / 1024 for k in columns["rss_kib"]]
    ax = axes[0]
    ax.plot(seconds, rss, color="tab:blue", linewidth=1)
    ax.set_ylabel("RSS (MiB)")
    if summary:
        warm = summary["rss_kib_warm"] / 1024
        tolerance = summary.get("rss_tolerance", 0.10)
        warm_end = seconds[max(1, len(seconds) // 5) - 1]
        ax.axvspan(0, warm_end, color="0.92", label="warm-up")
        ax.axhline(warm, color="tab:green", linewidth=0.8, label="after warm-up")
        ax.axhspan(warm * (1 - tolerance), warm * (1 + tolerance), color="tab:green", alpha=0.08,
                   label="±%d %%" % round(tolerance * 100))
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(bottom=0)

    ax = axes[1]
    ax.plot(seconds, columns["p99_ms"], color="tab:orange", linewidth=1)
    ax.set_ylabel("p99 latency (ms)\nper second")
    ax.set_ylim(bottom=0)

    for ax, column, label, idle_key, colour in (
        (axes[2], "open_fds", "open descriptors", "fds_idle", "tab:purple"),
        (axes[3], "tokio_tasks", "tokio tasks", "tasks_idle", "tab:red"),
    ):
        ax.plot(seconds, columns[column], color=colour, linewidth=1)
        ax.set_ylabel(label)
        if summary:
            ax.axhline(summary[idle_key], color="0.4", linewidth=0.8, linestyle="--",
                       label="idle before the load (%d); after it: %d" % (
                           summary[idle_key], summary[idle_key.replace("idle", "end")]))
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since the load started")
    for ax in axes:
        ax.grid(True, linewidth=0.3)
    fig.suptitle(title(summary), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format="svg", metadata={"Date": None})
    print("wrote %s" % out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--summary", help="the soak's JSON summary (benches/soak.py --summary)")
    p.add_argument("--out", default="soak.svg")
    args = p.parse_args()
    ensure_matplotlib()
    summary = None
    if args.summary:
        with open(args.summary) as f:
            summary = json.load(f)
    draw(read_csv(args.csv), summary, args.out)


if __name__ == "__main__":
    main()
