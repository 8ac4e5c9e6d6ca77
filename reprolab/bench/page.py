"""The report's benchmarks page: each kernel's median over revisions, its peer's figure from the same run,
its target, and the latest comparison with its own past."""

from __future__ import annotations

import html
from pathlib import Path

from reprolab.bench.kernels import KernelConfigError, load_kernel_config
from reprolab.bench.series import compare_all
from reprolab.bench.store import BenchStore
from reprolab.claims.plots import series_svg


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def _unit(largest: float) -> tuple[str, float]:
    """The unit the page plots a kernel's series in, and the factor from seconds."""
    if largest < 1e-3:
        return "µs", 1e6
    if largest < 1:
        return "ms", 1e3
    return "s", 1.0


def benchmarks_section(database: Path, config_path: Path | None) -> str:
    """HTML for ``#benchmarks``; empty when no benchmark run has been recorded."""
    runs = BenchStore(database).runs()
    if not runs:
        return ""
    esc = html.escape
    try:
        config = load_kernel_config(config_path)
        config_note = ""
    except KernelConfigError as exc:
        from reprolab.bench.kernels import KernelConfig

        config, config_note = KernelConfig(), f'<p class="warning">{esc(str(exc))}</p>'
    rows, cards = [], []
    for item, comparison in compare_all(runs, config):
        name = esc(item.kernel)
        change = comparison.change + (" (machine)" if comparison.is_reference else "")
        factor = "" if comparison.change == "new" else f"{comparison.factor:.2f}x [{comparison.ci[0]:.2f}, {comparison.ci[1]:.2f}]"
        latest_peer = item.peer[-1] if item.peer else None
        peer = f"{esc(item.info.peer.name)}: {_seconds(latest_peer)}" if item.info.peer else ""
        rows.append(
            f'<tr><td><a href="#k-{len(rows)}">{name}</a></td><td>{_seconds(item.medians[-1])}</td>'
            f'<td class="change-{esc(comparison.change)}">{esc(change)}</td><td>{factor}</td><td>{peer}</td>'
            f"<td>{esc(item.info.target or '')}</td></tr>"
        )
        figures = [*item.medians, *(v for v in item.peer if v is not None)]
        unit, per = _unit(max(figures))
        lines = [{"values": [v * per for v in item.medians], "colour": "#0969da", "name": "reprolab"}]
        if item.info.peer and any(v is not None for v in item.peer):
            lines.append({"values": [None if v is None else v * per for v in item.peer], "colour": "#8250df",
                          "name": item.info.peer.name, "dash": True})
        hlines = []
        if item.info.target_seconds is not None:
            hlines.append((item.info.target_seconds * per, f"target {_seconds(item.info.target_seconds)}"))
        svg = series_svg(lines, [r["label"] for r in item.runs], width=640, height=150, hlines=hlines,
                         title=f"{item.kernel}: median {unit} per run")
        legend = f"median {unit} per call (blue)" + (
            f"; {esc(item.info.peer.name)} in the same run (purple, dashed)" if len(lines) > 1 else ""
        )
        cards.append(
            f'<div class="kernel" id="k-{len(cards)}"><b>{name}</b> <small>{esc(item.machine)} · '
            f"{'ratio to the reference kernel' if item.normalized else 'absolute seconds'}</small>"
            f"<p><code>{esc(comparison.line())}</code></p>"
            f"<p><small>{legend}{'; target: ' + esc(item.info.target) if item.info.target else ''}</small></p>"
            f"{svg}</div>"
        )
    revisions = {r.git_rev for r in runs}
    return f"""<section id="benchmarks"><h2>Benchmarks</h2>{config_note}
<p><small>{len(runs)} recorded run(s) over {len(revisions)} revision(s). Each kernel is compared with its own
past on the same machine: CPU-bound kernels as a ratio to the reference kernel timed in the same run, steps found
over the series, a change reported only beyond the threshold with a 95% interval excluding 1 and a rank test on the
rounds (see docs/benchmarks.md).</small></p>
<table class="counts"><tr><th>kernel</th><th>latest median</th><th>change</th><th>factor [95% CI]</th>
<th>peer (same run)</th><th>target</th></tr>{"".join(rows)}</table>{"".join(cards)}</section>"""
