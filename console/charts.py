"""Inline SVG charts, drawn on the server: no chart library, no script, readable without JavaScript.

`stacked_bars` draws one bar per time bucket, stacked by series (a model or an API key), with a y axis
of round numbers, a few x labels and a `<title>` on every segment (the browser's tooltip). `bar_rows`
draws horizontal capacity bars. Every text is escaped; the result is `Markup` for the templates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

# Colour-blind friendly (Okabe-Ito), then greys for the tail.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OTHER = "#9aa0a6"
MAX_SERIES = 7  # more are summed into "other"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `value` (an axis maximum people can read)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    base = 10**exponent
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= value:
            return float(step * base)
    return float(10 * base)


def compact(value: float) -> str:
    """12,345 → 12.3k; small numbers as they are."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def series_from(
    totals: Mapping[str, Sequence[float]], other_label: str = "other", limit: int = MAX_SERIES
) -> list[Series]:
    """Series ordered by their total, largest first; beyond `limit` they are summed into one."""
    ranked = sorted(totals.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    out = [Series(name, values, PALETTE[i % len(PALETTE)]) for i, (name, values) in enumerate(ranked[:limit])]
    rest = ranked[limit:]
    if rest:
        summed = [sum(v) for v in zip(*(values for _, values in rest), strict=True)]
        out.append(Series(other_label, summed, OTHER))
    return out


def stacked_bars(
    buckets: Sequence[datetime],
    series: Sequence[Series],
    *,
    label_format: str,
    unit: str,
    chart_id: str,
    width: int = 760,
    height: int = 220,
) -> Markup:
    left, right, top, bottom = 48, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(buckets), 1)
    stack_totals = [sum(s.values[i] for s in series) for i in range(len(buckets))]
    total = sum(stack_totals)
    y_max = nice_ceiling(max(stack_totals, default=0))
    slot = plot_w / n
    bar_w = max(slot * 0.72, 1.0)
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {width} {height}" '
        f'data-total="{total:g}" aria-label="{escape(unit)}: {compact(total)}">'
    ]
    for i in range(5):  # grid lines and y labels at 0, ¼, ½, ¾, 1 of the maximum
        value = y_max * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{compact(value)}</text>'
        )
    every = max(1, math.ceil(n / 8))
    for i, bucket in enumerate(buckets):
        x = left + slot * i + (slot - bar_w) / 2
        base = float(top + plot_h)
        label = bucket.strftime(label_format)
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / y_max
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{s.color}">'
                f"<title>{escape(label)} · {escape(s.name)}: {value:,.0f} {escape(unit)}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{left + slot * i + slot / 2:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # every value above is a number or escaped


def legend(series: Sequence[Series]) -> Markup:
    items = "".join(
        f'<li><span class="swatch" style="background:{s.color}"></span>{escape(s.name)}</li>' for s in series
    )
    return Markup(f'<ul class="legend">{items}</ul>')


def meter(used: int | None, capacity: int, peak: int | None = None) -> Markup:
    """A capacity bar: allocated devices of the pool's capacity, with the autoscalers' peak marked."""
    capacity = max(capacity, 0)
    if used is None or capacity == 0:
        return Markup('<div class="meter meter-unknown"></div>')
    pct = min(100.0, 100.0 * used / capacity)
    level = "high" if pct >= 90 else ("mid" if pct >= 70 else "low")
    peak_mark = ""
    if peak is not None and peak > used:
        peak_pct = min(100.0, 100.0 * peak / capacity)
        peak_mark = f'<span class="meter-peak" style="left:{peak_pct:.1f}%"></span>'
    return Markup(
        f'<div class="meter meter-{level}" role="meter" aria-valuemin="0" aria-valuemax="{capacity}" '
        f'aria-valuenow="{used}"><span style="width:{pct:.1f}%"></span>{peak_mark}</div>'
    )
