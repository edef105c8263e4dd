#!/usr/bin/env python3
"""Render signet-dashboard.json's panels from a real Prometheus into one PNG.

Where no Grafana is at hand (none is packaged for Debian 12), this draws each panel of the
dashboard from the very queries the dashboard holds, asked of a Prometheus server over its
HTTP API (query_range), so the picture shows what the dashboard would: the same expressions,
the same data.

Usage: render.py --prometheus http://127.0.0.1:9090 --minutes 10 --out dashboard.png
"""

import argparse
import json
import os
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def label(metric, expr_index, n_exprs):
    shown = {k: v for k, v in metric.items() if k != "__name__"}
    text = ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or metric.get("__name__", "")
    return text if n_exprs == 1 else f"[{chr(65 + expr_index)}] {text}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prometheus", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--dashboard", default=os.path.join(os.path.dirname(__file__), "signet-dashboard.json")
    )
    a = p.parse_args()
    with open(a.dashboard) as f:
        dash = json.load(f)
    end = time.time()
    start = end - a.minutes * 60
    step = max(1, int(a.minutes * 60 / 300))
    panels = dash["panels"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.2 * rows), squeeze=False)
    fig.suptitle(f"{dash['title']}: last {a.minutes:g} minutes (rendered from Prometheus)", fontsize=14)
    for i, panel in enumerate(panels):
        ax = axes[i // cols][i % cols]
        ax.set_title(panel["title"], fontsize=10)
        targets = panel["targets"]
        drawn = 0
        for j, t in enumerate(targets):
            for series in query_range(a.prometheus, t["expr"], start, end, step):
                xs = [(float(v[0]) - end) / 60 for v in series["values"]]
                ys = [float(v[1]) for v in series["values"]]
                ax.plot(xs, ys, label=label(series["metric"], j, len(targets)), linewidth=1.2)
                drawn += 1
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if drawn == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif drawn <= 8:
            ax.legend(fontsize=7, loc="upper left")
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(a.out, dpi=80)
    print(a.out)


if __name__ == "__main__":
    main()
