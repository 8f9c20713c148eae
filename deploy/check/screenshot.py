#!/usr/bin/env python3
"""Renders the Grafana dashboard's panels to a PNG without Grafana: runs each panel's queries
through a Prometheus server's HTTP API and draws them with matplotlib, on the dashboard's grid.

    python3 deploy/check/screenshot.py --prometheus http://127.0.0.1:9090 --minutes 10 \
        [--output deploy/grafana/dashboard.png] [--instance REGEX] [--subtitle TEXT]

Needs matplotlib, e.g. in a throwaway venv:
    python3 -m venv /tmp/shot-venv && /tmp/shot-venv/bin/pip install matplotlib
Used to make deploy/grafana/dashboard.png for the README; see deploy/OPERATIONS.md ("Operate").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Grafana's dark theme, so the picture reads like the real dashboard.
BG, PANEL, TEXT, GRID, DIM = "#111217", "#181b1f", "#ccccdc", "#2c3235", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#fade2a", "#96d98d", "#ffb357", "#ca95e5", "#ff7383"]
COLORS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "yellow": "#fade2a",
          "blue": "#5794f2", "dark-red": "#c4162a", "dark-orange": "#fa6400",
          "dark-yellow": "#e0b400", "dark-blue": "#1f60c4", "transparent": None}


def fixed_colors(panel) -> dict:
    """Series name -> colour from the panel's byName colour overrides."""
    out = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        if o.get("matcher", {}).get("id") != "byName":
            continue
        for prop in o.get("properties", []):
            c = prop.get("value", {}).get("fixedColor") if prop.get("id") == "color" else None
            if c:
                out[o["matcher"]["options"]] = COLORS.get(c, c)
    return out


class Prometheus:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, **params) -> list:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{params.get('query')}: {body}")
        return body["data"]["result"]

    def range(self, query, start, end, step):
        return self.get("/api/v1/query_range", query=query, start=start, end=end, step=step)

    def instant(self, query, at):
        return self.get("/api/v1/query", query=query, time=at)


# ------------------------------------------------------------------------------ formatting

def si(v: float) -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def fmt(unit: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{v * 1e6:.3g} µs"
        if a < 1:
            return f"{v * 1e3:.3g} ms"
        if a < 120:
            return f"{v:.3g} s"
        if a < 7200:
            return f"{v / 60:.3g} min"
        return f"{v / 3600:.3g} h"
    if unit == "bytes":
        for div, suf in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(v) >= div:
                return f"{v / div:.3g} {suf}"
        return f"{v:.0f} B"
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit in ("eps", "recps", "ops", "reqps"):
        return f"{si(v)}/s"
    return si(v)


def legend(fmt_str: str, metric: dict) -> str:
    if not fmt_str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in metric.items()) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt_str)


def substitute(expr: str, variables: dict) -> str:
    expr = re.sub(r"\$\{(\w+)(?::[^}]*)?\}", lambda m: variables.get(m.group(1), m.group(0)), expr)
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), expr)


def threshold_lines(defaults: dict) -> list[tuple[float, str]]:
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off") == "off":
        return []
    steps = defaults.get("thresholds", {}).get("steps", [])
    return [(s["value"], COLORS.get(s["color"], s["color"])) for s in steps
            if s.get("value") is not None and COLORS.get(s["color"], s["color"])]


def stat_color(defaults: dict, v: float) -> str:
    color = TEXT
    for s in defaults.get("thresholds", {}).get("steps", []):
        if s.get("value") is None or (v is not None and not math.isnan(v) and v >= s["value"]):
            color = COLORS.get(s["color"], s["color"]) or TEXT
    return color


# ------------------------------------------------------------------------------ panels

def style(ax):
    ax.set_facecolor(PANEL)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.tick_params(colors=DIM, labelsize=8, length=0)
    ax.grid(True, color=GRID, linewidth=0.6)


def time_axis(ax):
    lo, hi = ax.get_xlim()
    minutes = (hi - lo) * 24 * 60
    every = next((m for m in (1, 2, 5, 10, 15, 30, 60) if minutes / m <= 7), 120)
    if every < 60:
        ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, every)))
    else:
        ax.xaxis.set_major_locator(mdates.HourLocator(interval=max(1, every // 60)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))


def draw_timeseries(ax, panel, prom, variables, start, end, step):
    d = panel["fieldConfig"]["defaults"]
    unit = d.get("unit", "short")
    custom = d.get("custom", {})
    bars = custom.get("drawStyle") == "bars"
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    series = []
    for t in panel["targets"]:
        for r in prom.range(substitute(t["expr"], variables), start, end, step):
            xs = [datetime.fromtimestamp(float(ts)) for ts, _ in r["values"]]
            ys = [float(v) for _, v in r["values"]]
            series.append((legend(t.get("legendFormat", ""), r["metric"]), xs, ys))
    ymax = 0.0
    if not series:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", transform=ax.transAxes)
    bottoms: dict = {}
    width = step / 86400 * 0.8
    fixed = fixed_colors(panel)
    for i, (name, xs, ys) in enumerate(sorted(series, key=lambda s: s[0])):
        color = fixed.get(name, PALETTE[i % len(PALETTE)])
        ys = [0.0 if math.isnan(y) else y for y in ys] if bars else ys
        if bars:
            base = [bottoms.get(x, 0.0) for x in xs] if stacked else [0.0] * len(xs)
            ax.bar(xs, ys, width=width, bottom=base, color=color, label=name, linewidth=0)
            for x, b, y in zip(xs, base, ys):
                bottoms[x] = b + y
            ymax = max([ymax] + [b + y for b, y in zip(base, ys)])
        else:
            ax.plot(xs, ys, color=color, linewidth=1.2, label=name)
            if d.get("min", 0) == 0:   # a fill down to a raised axis minimum reads as a block
                ax.fill_between(xs, ys, color=color, alpha=0.08)
            finite = [y for y in ys if not math.isnan(y)]
            ymax = max([ymax] + finite)
    for value, color in threshold_lines(d):
        # Lines far above the data (a cap of millions over thousands) would flatten the plot.
        if value <= max(ymax, 1e-12) * 2:
            ax.axhline(value, color=color, linestyle="--", linewidth=1)
            ymax = max(ymax, value)
    if "min" in d:
        ax.set_ylim(bottom=d["min"])
    if "max" in d:
        ax.set_ylim(top=d["max"])
    elif ymax > 0:
        ax.set_ylim(top=ymax * 1.1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(unit, v)))
    ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    time_axis(ax)
    if series:
        ax.legend(loc="upper left", fontsize=7, frameon=True, facecolor=PANEL, edgecolor=PANEL,
                  framealpha=0.8, labelcolor=TEXT, ncol=2 if len(series) > 4 else 1)


def draw_stat(ax, panel, prom, variables, end):
    d = panel["fieldConfig"]["defaults"]
    unit = d.get("unit", "short")
    t = panel["targets"][0]
    res = prom.instant(substitute(t["expr"], variables), end)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if not res:
        ax.text(0.5, 0.45, "No data", color=DIM, ha="center", va="center", fontsize=12,
                transform=ax.transAxes)
        return
    name_mode = panel.get("options", {}).get("textMode") == "name"
    items = sorted(((legend(t.get("legendFormat", ""), r["metric"]), float(r["value"][1])) for r in res),
                   key=lambda kv: kv[0])
    if name_mode:
        text = "\n".join(n for n, _ in items)
        ax.text(0.5, 0.45, text, color=TEXT, ha="center", va="center", fontsize=9,
                transform=ax.transAxes, wrap=True)
        return
    n = len(items)
    fixed = fixed_colors(panel)
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    items.sort(key=lambda kv: order.get(kv[0], 9))
    for i, (name, v) in enumerate(items):
        x = (i + 0.5) / n
        big = 20 if n == 1 else 14
        shown = fmt(unit, v) if d.get("decimals") is None or unit not in ("short", "none") \
            else f"{v:.{d['decimals']}f}"
        ax.text(x, 0.5 if n == 1 else 0.55, shown, color=fixed.get(name) or stat_color(d, v), ha="center",
                va="center", fontsize=big, fontweight="bold", transform=ax.transAxes)
        if n > 1 or t.get("legendFormat"):
            ax.text(x, 0.18, name, color=DIM, ha="center", va="center", fontsize=7,
                    transform=ax.transAxes)


def draw_heatmap(ax, panel, prom, variables, start, end, step):
    t = panel["targets"][0]
    res = prom.range(substitute(t["expr"], variables), start, end, step)
    if not res:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", transform=ax.transAxes)
        return
    rows = sorted(((float(r["metric"].get("le", "inf")), r) for r in res), key=lambda kv: kv[0])
    times = sorted({float(ts) for _, r in rows for ts, _ in r["values"]})
    idx = {ts: i for i, ts in enumerate(times)}
    cum = [[0.0] * len(times) for _ in rows]
    for j, (_, r) in enumerate(rows):
        for ts, v in r["values"]:
            cum[j][idx[float(ts)]] = 0.0 if v == "NaN" else float(v)
    # Cumulative buckets -> count per bucket, as Grafana does for format=heatmap.
    # Empty cells stay transparent, as in Grafana.
    grid = [[(cum[j][i] - (cum[j - 1][i] if j else 0.0)) or math.nan for i in range(len(times))]
            for j in range(len(rows))]
    x0, x1 = mdates.date2num(datetime.fromtimestamp(times[0])), mdates.date2num(datetime.fromtimestamp(times[-1]))
    ax.imshow(grid, aspect="auto", origin="lower", cmap="YlOrRd", interpolation="nearest",
              extent=[x0, x1, -0.5, len(rows) - 0.5])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["+Inf" if math.isinf(le) else f"≤{le:g}" for le, _ in rows], fontsize=6)
    ax.xaxis_date()
    time_axis(ax)
    ax.grid(False)


# ------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--dashboard", type=Path, default=ROOT / "deploy/grafana/dashboards/distillguard.json")
    ap.add_argument("--output", type=Path, default=ROOT / "deploy/grafana/dashboard.png")
    ap.add_argument("--instance", default=".*", help="value for $instance (a regex)")
    ap.add_argument("--subtitle", default="", help="what traffic the picture shows")
    args = ap.parse_args()

    prom = Prometheus(args.prometheus)
    dash = json.loads(args.dashboard.read_text())
    end = time.time()
    start = end - args.minutes * 60
    step = max(5, int(args.minutes * 60 / 150))
    variables = {"instance": args.instance, "__rate_interval": f"{max(60, 4 * step)}s",
                 "__interval": f"{step}s", "__range": f"{int(args.minutes * 60)}s",
                 "datasource": "prometheus"}

    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    row_in, head_in, width_in = 0.42, 1.0, 22.0   # inches per grid row, header, figure width
    fig_h = rows * row_in + head_in
    fig = plt.figure(figsize=(width_in, fig_h), facecolor=BG)
    fx, fy = 1 / width_in, 1 / fig_h                 # one inch in figure fractions
    fig.text(0.2 * fx, 1 - 0.35 * fy,
             f"{dash['title']}: Grafana dashboard panels, last {args.minutes:g} min"
             + (f" of {args.subtitle}" if args.subtitle else ""),
             color=TEXT, fontsize=15, ha="left", va="center")
    fig.text(0.2 * fx, 1 - 0.72 * fy,
             "Grafana cannot be installed on the build machine: rendered with matplotlib from the "
             "dashboard JSON's own queries through the Prometheus HTTP API, "
             + datetime.fromtimestamp(end).strftime("%Y-%m-%d %H:%M"),
             color=DIM, fontsize=10, ha="left", va="center")

    def cell(g):
        """(left, bottom, width, height) of a grid cell, in figure fractions."""
        left = 0.1 * fx + g["x"] / 24 * (1 - 0.2 * fx)
        width = g["w"] / 24 * (1 - 0.2 * fx)
        top = 1 - head_in * fy - g["y"] * row_in * fy
        height = g["h"] * row_in * fy
        return left, top - height, width, height

    problems = 0
    for p in panels:
        left, bottom, width, height = cell(p["gridPos"])
        if p["type"] == "row":
            fig.text(left + 0.1 * fx, bottom + height / 2, p["title"], color=TEXT, fontsize=13,
                     fontweight="bold", ha="left", va="center")
            continue
        gap = 0.05
        fig.add_artist(Rectangle((left + gap * fx, bottom + gap * fy), width - 2 * gap * fx,
                                 height - 2 * gap * fy, transform=fig.transFigure,
                                 facecolor=PANEL, edgecolor=GRID, linewidth=0.6, zorder=-10))
        fig.text(left + 0.15 * fx, bottom + height - 0.2 * fy, p["title"], color=TEXT,
                 fontsize=10, ha="left", va="center")
        if p["type"] == "stat":
            rect = [left + 0.1 * fx, bottom + 0.1 * fy, width - 0.2 * fx, height - 0.45 * fy]
        else:   # room for the y tick labels on the left and the time axis below
            rect = [left + 0.75 * fx, bottom + 0.3 * fy, width - 0.9 * fx, height - 0.6 * fy]
        ax = fig.add_axes(rect)
        style(ax)
        try:
            if p["type"] == "timeseries":
                draw_timeseries(ax, p, prom, variables, start, end, step)
            elif p["type"] == "stat":
                draw_stat(ax, p, prom, variables, end)
            elif p["type"] == "heatmap":
                draw_heatmap(ax, p, prom, variables, start, end, step)
        except Exception as e:  # noqa: BLE001 - show the failure in the panel, and exit non-zero
            problems += 1
            ax.text(0.5, 0.5, f"query failed: {e}"[:200], color=COLORS["red"], ha="center",
                    va="center", fontsize=7, wrap=True, transform=ax.transAxes)
            print(f"screenshot: panel {p['title']!r}: {e}", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80, facecolor=BG)
    print(f"wrote {args.output} ({len(panels)} panels, {problems} failed)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
