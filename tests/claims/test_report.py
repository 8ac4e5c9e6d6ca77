"""The report: merging the suite's latest results, partial runs, file modes, plots, the markdown renderer."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from reprolab.claims.history import History, RunInfo
from reprolab.claims.markdown import render_markdown
from reprolab.claims.plots import format_number, nice_ticks, series_svg, strip_plot_svg, tick_labels
from reprolab.claims.report import line_of, write_reports
from reprolab.claims.runner import ClaimResult

pytestmark = pytest.mark.fast


def _result(claim_id: str, verdict: str = "reproduced", **extra: Any) -> ClaimResult:
    fields: dict[str, Any] = {
        "id": claim_id, "file": "expectations/clustering/a.yaml", "line": 1,
        "document": "000_0cacfeb2bd6edaa0.txt", "kind": "reproduce", "scale": "fast",
        "statement": "a statement", "quote": "the **merge** boost is `+0.16`", "expected": "mean(value) >= 0.5",
        "why": "test", "metric": "value", "statistic": "mean", "interval": "point", "bounds": (0.5, float("inf")),
        "recorded": "reproduced", "verdict": verdict, "observed": 0.8, "ci": (0.7, 0.9), "n_seeds": 3,
        "samples": [0.7, 0.8, 0.9],
    }
    fields.update(extra)
    return ClaimResult(**fields)


def _run(when: str, rev: str = "abc") -> RunInfo:
    return RunInfo(run_id=f"id{when}", started_at=when, git_rev=rev, versions={}, machine="m", command="test")


def test_partial_run_keeps_every_claim_in_latest_and_writes_its_own_report(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    full = _run("2026-01-01T00:00:00")
    history.record(full, [_result("alpha"), _result("beta", verdict="refuted")])
    write_reports(tmp_path / "r", full, [r.to_dict() for r in [_result("alpha"), _result("beta", verdict="refuted")]],
                  history=history, suite=["alpha", "beta", "gamma"])
    partial = _run("2026-01-02T00:00:00", rev="def")
    history.record(partial, [_result("alpha", observed=0.75)])
    written = write_reports(tmp_path / "r", partial, [_result("alpha", observed=0.75).to_dict()],
                            history=history, suite=["alpha", "beta", "gamma"])
    latest = json.loads((tmp_path / "r" / "latest.json").read_text())
    by_id = {c["id"]: c for c in latest["claims"]}
    assert set(by_id) == {"alpha", "beta"} and latest["partial_run"] is True  # gamma: no result, no metadata
    assert by_id["alpha"]["observed"] == 0.75 and by_id["alpha"]["from_run"]["this_run"]
    assert by_id["beta"]["verdict"] == "refuted" and by_id["beta"]["from_run"]["git_rev"] == "abc"
    own = [p for p in written if p.name.startswith("run-")]
    assert len(own) == 2
    assert [c["id"] for c in json.loads(own[0].read_text())["claims"]] == ["alpha"]
    page = (tmp_path / "r" / "latest.html").read_text()
    assert "from an earlier run" in page and own[1].name in page
    assert "observed statistic over 2 run(s)" in page  # alpha's trend from the history


def test_reports_are_world_readable_respecting_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        paths = write_reports(tmp_path, _run("2026-01-01T00:00:00"), [_result("alpha").to_dict()])
    finally:
        os.umask(old)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in paths)
    os.umask(0o077)
    try:
        paths = write_reports(tmp_path, _run("2026-01-01T00:00:00"), [_result("alpha").to_dict()])
    finally:
        os.umask(old)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)


@pytest.mark.parametrize("name", ["latest.html", "latest.json"])
def test_a_lab_file_named_like_a_report_is_left_alone(tmp_path: Path, name: str) -> None:
    # reports/latest.html of the lab's own (a page it publishes) was replaced by the dashboard
    mine = tmp_path / name
    mine.write_text("<html><title>our group's results</title></html>" if name.endswith("html") else '{"ours": 1}')
    with pytest.raises(FileExistsError, match="reprolab did not write"):
        write_reports(tmp_path, _run("2026-01-01T00:00:00"), [_result("alpha").to_dict()])
    assert mine.read_text().startswith(("<html>", '{"ours"'))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing half-written beside it
    mine.unlink()
    paths = write_reports(tmp_path, _run("2026-01-01T00:00:00"), [_result("alpha").to_dict()])
    assert write_reports(tmp_path, _run("2026-01-02T00:00:00"), [_result("alpha").to_dict()]) == paths  # ours: replaced


def test_dashboard_has_summary_filters_and_renders_quotes(tmp_path: Path) -> None:
    results = [_result("alpha").to_dict(), _result("beta", verdict="refuted").to_dict()]
    write_reports(tmp_path, _run("2026-01-01T00:00:00"), results)
    page = (tmp_path / "latest.html").read_text()
    assert 'id="summary"' in page and 'data-filter="verdict"' in page and "<script>" in page
    quotes = re.findall(r"<blockquote>(.*?)</blockquote>", page)
    assert quotes and all("<strong>merge</strong>" in q and "<code>+0.16</code>" in q for q in quotes)
    assert not any("**" in q for q in quotes)
    assert 'href="#c-beta"' in page  # the mismatch list links into the list
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no network
    assert page.count('class="claim ') == 2


def test_guards_render_when_present_and_are_optional(tmp_path: Path) -> None:
    guarded = _result("alpha").to_dict()
    guarded["guards"] = [{"guard": "mean(hard_fraction) <= 0.95", "arm": "", "value": 0.99, "passed": False,
                          "why": "near-hard responsibilities"}]
    write_reports(tmp_path, _run("2026-01-01T00:00:00"), [guarded, _result("beta").to_dict()])
    page = (tmp_path / "latest.html").read_text()
    assert page.count("Guards (valid_when)") == 1 and "FAILED" in page and "near-hard" in page


def test_markdown_escapes_html_first_and_renders_tables() -> None:
    out = render_markdown("<script>alert(1)</script> **bold** *it* `a<b`\n\n| k | nmi |\n|---|---|\n| 50 | **0.7** |")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out and "<code>a&lt;b</code>" in out
    assert "<th>k</th>" in out and "<td><strong>0.7</strong></td>" in out
    assert render_markdown("2 * 3 * 4") == "<p>2 * 3 * 4</p>"
    assert render_markdown("a \x000\x00 `x` \x007\x00") == "<p>a 0 <code>x</code> 7</p>"  # NUL: no placeholder


@pytest.mark.parametrize(
    ("lo", "hi"), [(726_014, 726_014), (0.0, 1.0), (7.25e5, 7.27e5), (-0.003, 0.004), (1e-6, 3e-6)]
)
def test_ticks_are_distinct_and_readable(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    labels = tick_labels(ticks)
    assert len(ticks) >= 2 and len(set(labels)) == len(labels)
    assert not any("e+" in label for label in labels)


def test_format_number_is_compact() -> None:
    assert format_number(726_014) == "726k"
    assert format_number(0.16) == "0.16"
    assert format_number(2_500_000, 500_000) == "2.5M"
    assert format_number(1e300) == "1e+300" and format_number(-3e14) == "-3e+14"  # not 292 digits and a G


def _within_seconds(seconds: float, call: Any) -> Any:
    """``call()``, failed (not hung) when it runs past ``seconds``."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "samples",
    [
        [0.3, 0.1 + 0.2],  # one value at float precision: the tick loop never advanced (the report hung)
        [1.0, 1.0 + 2.2e-16],
        [1e308, -1e308],  # a span that overflows to inf: every coordinate was NaN (or a ValueError)
        [1e308, 1e308],
        [5e-324, 0.0],
    ],
)
def test_plots_of_extreme_values_are_finite_svg(samples: list[float]) -> None:
    result = _result("x", samples=samples, observed=samples[0], ci=(samples[1], samples[0]),
                     bounds=(0.0, 1.0)).to_dict()
    strip = _within_seconds(5, lambda: strip_plot_svg(result))
    trend = _within_seconds(5, lambda: series_svg([{"values": samples}], ["a", "b"], hlines=[(math.nan, "t")]))
    for svg in (strip, trend):
        numbers = re.findall(r' (?:x|y|x1|x2|y1|y2|cx|cy|width|height)="([^"]+)"', svg)
        assert numbers and all(math.isfinite(float(n)) for n in numbers), svg
        ticks = re.findall(r'font-size="10" fill="#57606a" text-anchor="(?:middle|end)">([^<]+)<', svg)
        assert len(ticks) >= 2 and all(len(t) <= 8 for t in ticks), ticks


def _circles(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]


def test_fraction_indicators_are_not_drawn_on_top_of_each_other() -> None:
    result = _result("frac", statistic="fraction", samples=[1.0] * 7 + [0.0] * 3, bounds=(0.6, 1.0),
                     observed=0.7, ci=None).to_dict()
    svg = strip_plot_svg(result)
    dots = _circles(svg)
    assert len(dots) == 10 and len(set(dots)) == 10
    assert "7 of 10 seeds" in svg and "bound" in svg


def test_strip_plot_of_large_equal_values_has_distinct_tick_labels() -> None:
    svg = strip_plot_svg(_result("big", samples=[726_014.0] * 3, observed=726_014.0, ci=(726_014.0, 726_014.0),
                                 bounds=(700_000.0, float("inf"))).to_dict())
    labels = re.findall(r'text-anchor="middle">([^<]+)<', svg)
    assert len(labels) >= 2 and len(set(labels)) == len(labels)
    assert "e+05" not in svg and "bound ≥ 700k" in svg


def test_line_comes_from_the_note() -> None:
    assert line_of({"document": "003_x.txt", "file": "expectations/recorded/a.yaml"}) == "lvm"
    assert line_of({"document": "zzz.txt", "file": "expectations/merging/a.yaml"}) == "merging"


def test_never_run_claims_of_the_suite_are_listed_with_their_quote(tmp_path: Path) -> None:
    from claimfiles import claim_yaml, write_claims

    from reprolab.claims.project import find_project
    from reprolab.claims.session import ClaimSession

    (tmp_path / "expectations").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    write_claims(tmp_path / "expectations", "a.yaml", claim_yaml("alpha"), claim_yaml("gamma"))
    with ClaimSession(find_project(tmp_path)) as session:
        suite = session.suite()
    assert suite is not None and [c.id for c in suite] == ["alpha", "gamma"]
    write_reports(tmp_path / "r", _run("2026-01-01T00:00:00"), [_result("alpha").to_dict()], suite=suite)
    claims = {c["id"]: c for c in json.loads((tmp_path / "r" / "latest.json").read_text())["claims"]}
    assert claims["gamma"]["verdict"] == "never-run" and claims["gamma"]["quote"] == "a quoted sentence"
    (tmp_path / "expectations" / "a.yaml").unlink()
    (tmp_path / "expectations").rmdir()
    with ClaimSession(find_project(tmp_path)) as session:
        assert session.suite() is None
