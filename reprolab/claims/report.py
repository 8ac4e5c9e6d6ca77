"""Reports: ``latest.json`` (machine-readable) and a self-contained ``latest.html``.

The HTML has one small inline SVG per claim: each seed's value (or each seed's paired difference), the
accepted band, the statistic and its CI. Inline SVG keeps the page one file with no plotting dependency.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reprolab.claims.checks import describe_guard
from reprolab.claims.history import RunInfo

_COLOURS = {
    "reproduced": "#1a7f37",
    "not-reproduced": "#b35900",
    "refuted": "#cf222e",
    "inconclusive": "#8250df",
    "error": "#cf222e",
    "skipped": "#6e7781",
}


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def strip_plot_svg(result: Mapping[str, Any], width: int = 420, height: int = 64) -> str:
    """Per-seed dots against the accepted band; a bar for the statistic with its CI."""
    points = result.get("samples") or []
    low, high = result["bounds"]
    ci = result.get("ci") or (None, None)
    observed = result.get("observed")
    span = _finite([*points, low, high, observed, *ci])
    if not span:
        return '<svg width="420" height="20"><text x="4" y="14" font-size="11">no values</text></svg>'
    lo, hi = min(span), max(span)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(value: float) -> float:
        return 8 + (min(max(value, lo), hi) - lo) / (hi - lo) * (width - 16)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    band_lo, band_hi = x(low if math.isfinite(low) else lo), x(high if math.isfinite(high) else hi)
    parts.append(
        f'<rect x="{band_lo:.1f}" y="4" width="{max(band_hi - band_lo, 1):.1f}" height="{height - 24}" fill="#dafbe1"/>'
    )
    colour = _COLOURS.get(result.get("verdict", ""), "#444")
    for index, value in enumerate(points):
        if math.isfinite(value):
            jitter = 10 + (index * 7) % (height - 34)
            parts.append(
                f'<circle cx="{x(value):.1f}" cy="{jitter}" r="3" fill="{colour}" fill-opacity="0.7"/>'
            )
    if ci[0] is not None and ci[1] is not None:
        parts.append(
            f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{height - 16}" y2="{height - 16}" stroke="#24292f" stroke-width="2"/>'
        )
    if observed is not None and math.isfinite(observed):
        parts.append(
            f'<rect x="{x(observed) - 1.5:.1f}" y="{height - 22}" width="3" height="12" fill="#24292f"/>'
        )
    parts.append(f'<text x="8" y="{height - 1}" font-size="10" fill="#57606a">{lo:.4g}</text>')
    parts.append(
        f'<text x="{width - 8}" y="{height - 1}" font-size="10" fill="#57606a" text-anchor="end">{hi:.4g}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def render_html(
    run: RunInfo,
    results: Sequence[Mapping[str, Any]],
    series: Mapping[str, list[tuple[str, str, str | None]]] | None = None,
) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["verdict"]] = counts.get(result["verdict"], 0) + 1
    mismatches = sum(not r.get("matches", True) for r in results)
    esc = html.escape
    rows = []
    for r in results:
        ci = r.get("ci")
        observed = _fmt(r.get("observed")) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
        history = ""
        if series and r["id"] in series:
            history = " ".join(
                f'<span title="{esc(when)} {esc(rev or "")}" style="color:{_COLOURS.get(v, "#444")}">●</span>'
                for when, v, rev in series[r["id"]][-20:]
            )
        status = "ok" if r.get("matches", True) else "MISMATCH"
        detail = esc(r.get("message") or "")
        for guard in r.get("guards") or []:
            detail += f"<br>{esc(describe_guard(guard))} <small>({esc(str(guard.get('why', '')))})</small>"
        if r.get("traceback"):
            detail += f"<details><summary>traceback</summary><pre>{esc(r['traceback'])}</pre></details>"
        rows.append(
            f"""<tr class="{status.lower()}">
<td><b>{esc(r["id"])}</b><br><small>{esc(r["document"])} · {esc(r["kind"])} · {esc(r["scale"])}</small>
<blockquote>{esc(r["quote"])}</blockquote><small>{esc(r["statement"])}</small></td>
<td>{esc(r["expected"])}<br><small>{esc(r["why"])}</small></td>
<td>{observed}<br><small>n_seeds={r.get("n_seeds", 0)}</small></td>
<td>{strip_plot_svg(r)}</td>
<td style="color:{_COLOURS.get(r["verdict"], "#444")}"><b>{esc(r["verdict"])}</b><br><small>recorded: {esc(r["recorded"])} · {status}</small><br>{history}</td>
<td><small>{detail}</small></td></tr>"""
        )
    summary = ", ".join(f"{count} {verdict}" for verdict, count in sorted(counts.items()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>reprolab claims ledger</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse;width:100%}}
td,th{{border-top:1px solid #d0d7de;padding:6px;vertical-align:top;text-align:left}}
blockquote{{margin:4px 0;color:#57606a;font-style:italic}}tr.mismatch{{background:#fff1f0}}</style></head><body>
<h1>reprolab claims ledger</h1>
<p>{len(results)} claims: {esc(summary)}; <b>{mismatches}</b> differ from their recorded verdict.<br>
<small>run {esc(run.run_id)} at {esc(run.started_at)} · git {esc(run.git_rev or "n/a")} · {esc(run.machine)}<br>
{esc(json.dumps(run.versions))}</small></p>
<p><small>Plot: dots are what the statistic summarises, one per seed (the metric; its paired difference for
two-arm claims; 1/0 for whether a seed satisfies a fraction's predicate), green is the accepted band, the bar is
the statistic and the line its CI.</small></p>
<table><tr><th>claim</th><th>expected</th><th>observed</th><th>per seed</th><th>verdict</th><th>notes</th></tr>
{"".join(rows)}</table></body></html>"""


def write_reports(
    report_dir: Path,
    run: RunInfo,
    results: Sequence[Mapping[str, Any]],
    series: Mapping[str, list[tuple[str, str, str | None]]] | None = None,
) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.html`` atomically; returns their paths."""
    payload = {"run": run.__dict__, "claims": list(results)}
    json_path, html_path = report_dir / "latest.json", report_dir / "latest.html"
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str, allow_nan=True))
    atomic_write_text(html_path, render_html(run, results, series))
    return json_path, html_path
