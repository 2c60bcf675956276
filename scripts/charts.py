#!/usr/bin/env python3
"""Turns harness result folders into PNG charts a person can look at.

    scripts/charts.py results/2026-...-direct-... results/2026-...-buffered-... [--out DIR]

For each folder, writes charts.png into it:
  - latency percentile curves (publish, and end-to-end when consumers tailed the producers;
    append latency for engine runs), from the percentile distribution in summary.json, on a
    "nines" axis so the tail is as visible as the median;
  - throughput over time, one point per second of the measured period (published and
    consumed MB/s, and the backlog when consumers tailed), with the kill and restart of a
    --kill-leader-at run marked.
With two folders or more, also writes comparison.png (into --out, default the current
directory): the same two charts with one line per folder.

Needs matplotlib (python3 -m pip install matplotlib). Reads only summary.json.
"""

import argparse
import json
import math
import sys
from pathlib import Path

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter
except ImportError:
    sys.exit("charts.py needs matplotlib: python3 -m pip install matplotlib")

# The deepest percentile the x axis shows: 99.9999 (6 nines), as the harness records.
NINES_MAX = 6


def load(folder):
    """The folder's summary.json, with the folder's name for labels."""
    path = Path(folder) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"charts.py: cannot read {path}: {error}")
    summary["_folder"] = Path(folder)
    return summary


def label(summary):
    """A short name for a run: its label (broker runs) or strategy (engine runs)."""
    return summary.get("label") or summary.get("strategy") or summary["_folder"].name


def latency_curves(summary):
    """(name, distribution) pairs: the latency histograms a run recorded."""
    curves = []
    if "append_latency_us" in summary:
        curves.append(("append", summary["append_latency_us"]))
    publish = summary.get("publish") or {}
    if publish.get("latency_us"):
        curves.append(("publish", publish["latency_us"]))
    consume = summary.get("consume") or {}
    if consume.get("end_to_end_latency_us"):
        curves.append(("end-to-end", consume["end_to_end_latency_us"]))
    return curves


def nines(percentile):
    """Position on the x axis: 90% -> 1, 99% -> 2, 99.9% -> 3; 100% is drawn at the end."""
    if percentile >= 100.0:
        return NINES_MAX + 0.6
    return -math.log10(1.0 - percentile / 100.0)


def plot_percentiles(axis, name, latency, **style):
    points = latency.get("distribution") or [
        (50.0, latency["p50"]),
        (75.0, latency["p75"]),
        (95.0, latency["p95"]),
        (99.0, latency["p99"]),
        (99.9, latency["p99_9"]),
        (99.99, latency["p99_99"]),
        (100.0, latency["max"]),
    ]
    xs = [nines(percentile) for percentile, _ in points]
    ys = [max(value, 1) / 1000.0 for _, value in points]
    axis.plot(xs, ys, label=name, **style)


def style_percentile_axis(axis, title):
    ticks = list(range(NINES_MAX + 1)) + [NINES_MAX + 0.6]
    names = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%", "max"]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.set_xticklabels(names[: len(ticks)])
    axis.set_xlim(0, NINES_MAX + 0.7)
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("percentile")
    axis.set_ylabel("latency (ms, log scale)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")


def windows(summary):
    """(name, MB per second) series of the measured period."""
    series = []
    if "window_mb_s" in summary and "publish" not in summary:
        series.append(("appended", summary["window_mb_s"]))
    publish = summary.get("publish") or {}
    if publish.get("window_mb_s"):
        series.append(("published", publish["window_mb_s"]))
    consume = summary.get("consume") or {}
    if consume.get("window_mb_s"):
        series.append(("consumed", consume["window_mb_s"]))
    return series


def mark_faults(axis, summary):
    faults = summary.get("faults") or {}
    for key, text in (("killed_at_s", "leader killed"), ("restarted_at_s", "restarted")):
        at = faults.get(key)
        if at is not None:
            axis.axvline(at, color="red", linestyle=":", linewidth=1)
            axis.annotate(text, (at, 0), xytext=(3, 3), textcoords="offset points",
                          rotation=90, fontsize="small", color="red", va="bottom")


def style_throughput_axis(axis, title):
    axis.set_xlabel("seconds into the measured period")
    axis.set_ylabel("MB/s")
    axis.set_ylim(bottom=0)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small")


def run_title(summary):
    parts = [summary.get("workload", ""), label(summary)]
    verification = summary.get("verification")
    if verification:
        parts.append(f"lost {verification['lost_records']}, "
                     f"duplicated {verification['duplicated_records']}")
    return "  |  ".join(part for part in parts if part)


def chart_folder(summary):
    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(14, 5.5))
    for name, latency in latency_curves(summary):
        plot_percentiles(latency_axis, name, latency, marker=".")
    style_percentile_axis(latency_axis, "latency by percentile")
    for name, values in windows(summary):
        throughput_axis.plot(range(1, len(values) + 1), values, label=name, marker=".")
    backlog = (summary.get("publish") or {}).get("window_backlog_mb")
    if backlog:
        throughput_axis.plot(range(1, len(backlog) + 1), backlog, label="backlog (MB)",
                             linestyle="--", color="grey")
    mark_faults(throughput_axis, summary)
    style_throughput_axis(throughput_axis, "throughput per second")
    figure.suptitle(run_title(summary), fontsize="medium")
    figure.tight_layout()
    path = summary["_folder"] / "charts.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def chart_comparison(summaries, out_dir):
    figure, (latency_axis, throughput_axis) = plt.subplots(1, 2, figsize=(14, 5.5))
    for summary in summaries:
        curves = dict(latency_curves(summary))
        name = "publish" if "publish" in curves else next(iter(curves), None)
        if name:
            latency = curves[name]
            plot_percentiles(latency_axis, f"{label(summary)} ({name})", latency, marker=".")
        series = windows(summary)
        if series:
            name, values = series[0]
            throughput_axis.plot(range(1, len(values) + 1), values,
                                 label=f"{label(summary)} ({name})", marker=".")
    style_percentile_axis(latency_axis, "publish latency by percentile")
    style_throughput_axis(throughput_axis, "throughput per second")
    workloads = sorted({summary.get("workload", "") for summary in summaries})
    figure.suptitle("  vs  ".join(workloads), fontsize="medium")
    figure.tight_layout()
    path = Path(out_dir) / "comparison.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="result folders (with summary.json)")
    parser.add_argument("--out", default=".", help="where comparison.png goes")
    arguments = parser.parse_args()
    folders = [folder for folder in arguments.folders if Path(folder).is_dir()]
    for skipped in sorted(set(arguments.folders) - set(folders)):
        print(f"charts.py: skipping {skipped}: not a result folder", file=sys.stderr)
    if not folders:
        sys.exit("charts.py: no result folders given")
    summaries = [load(folder) for folder in folders]
    for summary in summaries:
        print(chart_folder(summary))
    if len(summaries) > 1:
        print(chart_comparison(summaries, arguments.out))


if __name__ == "__main__":
    main()
