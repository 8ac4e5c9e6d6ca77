"""Inline SVG for the report: readable axis ticks, the per-seed strip plot, trends over runs, kernel series.

Inline SVG keeps the report one file with no plotting dependency and no network.
"""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

VERDICT_COLOURS = {
    "reproduced": "#1a7f37",
    "not-reproduced": "#b35900",
    "refuted": "#cf222e",
    "inconclusive": "#8250df",
    "error": "#a40e26",
    "skipped": "#6e7781",
    "never-run": "#6e7781",
}
_MUTED = "#57606a"


def finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


# Values are clipped to this magnitude before their span is taken, so that neither the span of 1e308 and -1e308
# nor its padding overflows to inf (which made every coordinate NaN).
_LARGEST = sys.float_info.max / 8
# Two values closer than this fraction of their magnitude are one value at the plot's resolution: a span that
# small has ticks a step apart that adding the step to a tick does not change (0.1 + 0.2 and 0.3 hung the report).
_RESOLUTION = 1e-9


def _one_value(lo: float, hi: float) -> bool:
    return hi - lo <= max(abs(lo) * _RESOLUTION, abs(hi) * _RESOLUTION, 1e-300)


def padded_range(values: Sequence[float], fraction: float) -> tuple[float, float]:
    """[min, max] of finite ``values`` widened by ``fraction`` of their span (by 5% of their magnitude, or by 1,
    when they are one value at the plot's resolution); always finite."""
    lo, hi = (min(max(v, -_LARGEST), _LARGEST) for v in (min(values), max(values)))
    pad = (hi - lo) * fraction if not _one_value(lo, hi) else max(abs(lo), abs(hi)) * 0.05 or 1.0
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values spanning [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if _one_value(lo, hi):
        lo, hi = padded_range([lo, hi], 0.0)
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    for index in range(2 * count + 2):  # at most count + 1 fit in [lo, hi]; bounded whatever rounding does
        value = first + index * step
        if value > hi + step * 1e-9:
            break
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
    return ticks


def format_number(value: float, step: float | None = None) -> str:
    """Compact and readable: 726,014 -> 726k, 0.000123 -> 1.23e-4 only when nothing shorter is exact enough."""
    if value is None or not math.isfinite(value):
        return "—" if value is None else str(value)
    magnitude = abs(value)
    if not step and magnitude < 1e4:
        return f"{value:.4g}"
    if magnitude >= 1e13:  # beyond 10000G a suffix would print every digit (1e300 as 292 of them)
        return f"{value:.3g}" if not step else f"{value:.{max(3, math.ceil(math.log10(magnitude / abs(step))) + 1)}g}"
    resolution = abs(step) if step else magnitude / 100 or 1.0
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= 10 * divisor or (magnitude >= divisor and resolution >= divisor / 100):
            scaled = resolution / divisor
            decimals = max(0, min(3, -math.floor(math.log10(scaled)))) if scaled < 1 else 0
            return f"{value / divisor:.{decimals}f}{suffix}"
    if magnitude != 0 and magnitude < 1e-3 and resolution < 1e-3:
        return f"{value:.3g}"
    decimals = max(0, min(6, -math.floor(math.log10(resolution)))) if resolution < 1 else 0
    return f"{value:.{decimals}f}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels that differ from each other (more decimals until they do)."""
    if len(ticks) < 2:
        return [format_number(t) for t in ticks]
    step = abs(ticks[1] - ticks[0])
    for refine in (1, 0.1, 0.01, 0.001):
        labels = [format_number(t, step * refine) for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{t:.6g}" for t in ticks]


class _Axis:
    """A linear x axis over [lo, hi] mapped to pixels [left, right], with nice ticks."""

    def __init__(self, values: Sequence[float], left: float, right: float) -> None:
        lo, hi = padded_range(values, 0.08)
        self.ticks = nice_ticks(lo, hi)
        self.lo, self.hi = min([lo, *self.ticks]), max([hi, *self.ticks])
        self.left, self.right = left, right

    def __call__(self, value: float) -> float:
        clipped = min(max(value, self.lo), self.hi)
        return self.left + (clipped - self.lo) / (self.hi - self.lo) * (self.right - self.left)


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)}">'
    )


def _x_ticks(axis: _Axis, y: float) -> list[str]:
    parts = [f'<line x1="{axis.left}" x2="{axis.right}" y1="{y}" y2="{y}" stroke="#d0d7de"/>']
    for tick, label in zip(axis.ticks, tick_labels(axis.ticks), strict=True):
        x = axis(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 3}" stroke="#8c959f"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{y + 13}" font-size="10" fill="{_MUTED}" text-anchor="middle">{label}</text>'
        )
    return parts


def _swarm(xs: Sequence[float], centre: float, dot: float, rows: int) -> list[tuple[float, float]]:
    """Dot-plot layout: equal values stack in columns of ``rows`` dots, extra columns step sideways, so that
    ten seeds at 1.0 show as ten dots, not one."""
    placed: list[tuple[float, float]] = []
    columns: dict[int, int] = {}
    for x in xs:
        key = round(x / dot)
        k = columns.get(key, 0)
        columns[key] = k + 1
        column, row = divmod(k, rows)
        offset = (row + 1) // 2 * (1 if row % 2 else -1)
        shift = (column + 1) // 2 * (1 if column % 2 else -1)
        placed.append((x + shift * dot, centre + offset * dot))
    return placed


def strip_plot_svg(result: Mapping[str, Any], width: int = 460) -> str:
    """Per-seed values (or paired differences, or 0/1 indicators) against the accepted band, with the bound
    labelled, and the statistic with its CI as a bar and line under the dots."""
    samples = finite(result.get("samples") or [])
    low, high = (result.get("bounds") or (-math.inf, math.inf))[:2]
    ci = result.get("ci") or (None, None)
    observed = result.get("observed")
    is_fraction = result.get("statistic") == "fraction"
    span = finite([*samples, low, high, observed, *ci])
    if is_fraction:
        span = [0.0, 1.0, *finite([low, high])]
    if not span:
        return _svg_open(width, 20, "no values") + '<text x="4" y="14" font-size="11">no values</text></svg>'
    height = 96
    axis = _Axis(span, 12, width - 12)
    parts = [_svg_open(width, height, f"per-seed values of {result.get('id', '')}")]
    band_lo = axis(low) if math.isfinite(low) else axis.left
    band_hi = axis(high) if math.isfinite(high) else axis.right
    parts.append(
        f'<rect x="{band_lo:.1f}" y="14" width="{max(band_hi - band_lo, 1):.1f}" height="52" fill="#dafbe1">'
        "<title>accepted band of the statistic</title></rect>"
    )
    for bound in (low, high):
        if math.isfinite(bound):
            x = axis(bound)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="12" y2="66" stroke="#1a7f37" stroke-width="1.5"/>')
    if math.isfinite(low) and math.isfinite(high):
        label, x, anchor = f"bound [{format_number(low)}, {format_number(high)}]", (band_lo + band_hi) / 2, "middle"
        x = min(max(x, axis.left + 70), axis.right - 70)
    elif math.isfinite(low) or math.isfinite(high):
        bound = low if math.isfinite(low) else high
        label = f"bound {'≥' if math.isfinite(low) else '≤'} {format_number(bound)}"
        x = axis(bound)
        anchor = "start" if x < width / 2 else "end"
        x += 3 if anchor == "start" else -3
    else:
        label = ""
    if label:
        parts.append(
            f'<text x="{x:.1f}" y="10" font-size="10" fill="#1a7f37" text-anchor="{anchor}">{html.escape(label)}</text>'
        )
    colour = VERDICT_COLOURS.get(str(result.get("verdict", "")), "#444")
    dots = _swarm([axis(v) for v in samples], 34, 6.0, 5)
    for (x, y), value in zip(dots, samples, strict=True):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.8" fill="{colour}" fill-opacity="0.75">'
            f"<title>{value:.6g}</title></circle>"
        )
    if is_fraction and samples:
        hits = sum(1 for v in samples if v >= 0.5)
        parts.append(
            f'<text x="{axis.right:.1f}" y="62" font-size="10" fill="{_MUTED}" text-anchor="end">'
            f"{hits} of {len(samples)} seeds satisfy the predicate</text>"
        )
    if ci[0] is not None and ci[1] is not None and math.isfinite(ci[0]) and math.isfinite(ci[1]):
        parts.append(
            f'<line x1="{axis(ci[0]):.1f}" x2="{axis(ci[1]):.1f}" y1="72" y2="72" stroke="#24292f" stroke-width="2">'
            "<title>95% CI of the statistic</title></line>"
        )
    if observed is not None and math.isfinite(observed):
        parts.append(
            f'<rect x="{axis(observed) - 1.5:.1f}" y="66" width="3" height="12" fill="#24292f">'
            f"<title>statistic {observed:.6g}</title></rect>"
        )
    parts.extend(_x_ticks(axis, 80))
    parts.append("</svg>")
    return "".join(parts)


def series_svg(
    lines: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    width: int = 460,
    height: int = 120,
    band: tuple[float, float] | None = None,
    hlines: Sequence[tuple[float, str]] = (),
    title: str = "",
) -> str:
    """Values over runs (x = run, labelled by ``labels``): each line is {"values", "colour", "name",
    optional "ci" (per point), "colours" (per point), "dash"}. ``band``: accepted range shaded; ``hlines``:
    labelled horizontal lines (targets)."""
    n = len(labels)
    values = [v for line in lines for v in finite(line["values"])]
    for line in lines:
        for interval in line.get("ci") or []:
            if interval:
                values.extend(finite(interval))
    values.extend(finite([v for v, _ in hlines]))
    if band:
        values.extend(finite(band))
    if not values or n == 0:
        return ""
    left, right, top, bottom = 56, width - 8, 8, height - 22
    lo, hi = padded_range(values, 0.1)
    ticks = nice_ticks(lo, hi, 4)
    lo, hi = min([lo, *ticks]), max([hi, *ticks])

    def y(value: float) -> float:
        return bottom - (min(max(value, lo), hi) - lo) / (hi - lo) * (bottom - top)

    def x(index: int) -> float:
        return left + (index + 0.5) / n * (right - left)

    parts = [_svg_open(width, height, title or "series over runs")]
    if band:
        b_lo = y(band[1]) if math.isfinite(band[1]) else top
        b_hi = y(band[0]) if math.isfinite(band[0]) else bottom
        parts.append(f'<rect x="{left}" y="{b_lo:.1f}" width="{right - left}" height="{max(b_hi - b_lo, 1):.1f}" '
                     'fill="#dafbe1"><title>accepted band</title></rect>')
    for tick, label in zip(ticks, tick_labels(ticks), strict=True):
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" font-size="10" fill="{_MUTED}" '
                     f'text-anchor="end">{label}</text>')
    for value, label in hlines:
        if not math.isfinite(value):
            continue
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#bf8700" '
                     'stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{right}" y="{y(value) - 3:.1f}" font-size="10" fill="#bf8700" '
                     f'text-anchor="end">{html.escape(label)}</text>')
    for line in lines:
        points = [(i, v) for i, v in enumerate(line["values"]) if v is not None and math.isfinite(v)]
        colour = line.get("colour", "#0969da")
        if len(points) > 1:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
            dash = ' stroke-dasharray="5 3"' if line.get("dash") else ""
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>')
        for i, v in points:
            interval = (line.get("ci") or [None] * n)[i]
            if interval and all(c is not None and math.isfinite(c) for c in interval):
                parts.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(interval[0]):.1f}" '
                             f'y2="{y(interval[1]):.1f}" stroke="{colour}" stroke-opacity="0.5"/>')
            dot = (line.get("colours") or [colour] * n)[i]
            tip = html.escape(f"{line.get('name', '')} {labels[i]}: {v:.6g}".strip())
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{dot}"><title>{tip}</title></circle>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="{_MUTED}">{html.escape(labels[0])}</text>')
    if n > 1:
        parts.append(f'<text x="{right}" y="{height - 6}" font-size="10" fill="{_MUTED}" text-anchor="end">'
                     f"{html.escape(labels[-1])}</text>")
    parts.append("</svg>")
    return "".join(parts)
