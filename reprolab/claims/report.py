"""Reports: ``latest.json`` (machine-readable) and ``latest.html``, a self-contained dashboard.

``latest.*`` always shows the newest result of every claim of the suite: this run's results, and for the claims
this run did not check (``-k``, ``-m recorded``) their latest result from the history, marked with the run it came
from. A partial run also writes its own ``run-<time>-<id>.{json,html}`` beside them. The HTML works from
``file://`` with no network: one file, inline CSS, SVG and plain JavaScript (search, filters, sorting). A
benchmarks page (``#benchmarks``) shows each kernel's series when the history holds benchmark runs.
"""

from __future__ import annotations

import errno
import html
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprolab.claims.history import History, RunInfo
from reprolab.claims.markdown import render_markdown
from reprolab.claims.plots import VERDICT_COLOURS, format_number, series_svg, strip_plot_svg

VERDICT_ORDER = ("refuted", "not-reproduced", "error", "inconclusive", "reproduced", "skipped", "never-run")
# Research line of each lab note (DESIGN.md): recorded claims sit in expectations/recorded/ but belong to a line.
NOTE_LINES = {"000": "clustering", "001": "clustering", "002": "lvm", "003": "lvm", "004": "merging"}

__all__ = ["atomic_write_text", "render_html", "strip_plot_svg", "write_reports"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename; the file gets 0666 minus the umask (0644 usually), as open() would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_JSON_HEAD = '{\n  "run": {'  # how every report json.dumps(payload, indent=2) writes begins
_HTML_TITLE = "<title>reprolab claims ledger</title>"  # the dashboard's; also how its files are known


def _written_by_reprolab(path: Path) -> bool:
    """Whether ``path`` is absent or a report reprolab wrote (its JSON head, or the dashboard's title near the top)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2048).decode("utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):  # nothing there (or `reports` a file: the write says so)
        return True
    except IsADirectoryError:
        return False
    return head.startswith(_JSON_HEAD) if path.suffix == ".json" else _HTML_TITLE in head


def _refuse_foreign(paths: Iterable[Path]) -> None:
    """Raise FileExistsError (an OSError: the run stands, a warning says why) before any report is written when
    one of ``paths`` is a file reprolab did not write: a lab's own ``reports/latest.html`` is never replaced."""
    for path in paths:
        if not _written_by_reprolab(path):
            raise FileExistsError(errno.EEXIST, "a file of this name that reprolab did not write; left alone", str(path))


def line_of(claim: Mapping[str, Any]) -> str:
    """The research line: from the note number, else the directory under expectations/."""
    document = str(claim.get("document") or "")
    if document[:3] in NOTE_LINES:
        return NOTE_LINES[document[:3]]
    parts = Path(str(claim.get("file") or "")).parts
    if "expectations" in parts and parts.index("expectations") + 1 < len(parts) - 1:
        return parts[parts.index("expectations") + 1]
    return "other"


def _suite_entry(item: Any) -> tuple[str, dict[str, Any] | None]:
    """A suite member: a claim id, or a LoadedClaim (then its metadata fills a never-run row and evidence)."""
    if isinstance(item, str):
        return item, None
    claim = item.claim
    meta = {
        "id": claim.id,
        "file": str(item.path),
        "line": item.line,
        "document": item.source.document,
        "kind": claim.kind,
        "scale": claim.scale,
        "statement": claim.statement,
        "quote": claim.quote,
        "expected": claim.expect.describe(),
        "why": claim.expect.why,
        "metric": claim.expect.metric,
        "statistic": claim.expect.statistic,
        "bounds": list(claim.expect.accepted_interval()),
        "recorded": claim.verdict,
        "evidence": claim.evidence,
    }
    return claim.id, meta


def merge_latest(
    run: RunInfo,
    results: Sequence[Mapping[str, Any]],
    history: History | None,
    suite: Iterable[Any] | None,
    since: str | None = None,
) -> list[dict[str, Any]]:
    """Every suite claim's newest result: this run's, else the history's, else a ``never-run`` row."""
    current = {r["id"]: {**r, "from_run": {"this_run": True, "started_at": run.started_at,
                                             "git_rev": run.git_rev}} for r in results}
    stored = history.latest(since) if history is not None else {}
    if suite is None:
        ids = list(current) + sorted(set(stored) - set(current))
        metas: dict[str, dict[str, Any] | None] = {}
    else:
        entries = [_suite_entry(item) for item in suite]
        ids = [claim_id for claim_id, _ in entries]
        metas = dict(entries)
        ids += [claim_id for claim_id in current if claim_id not in set(ids)]
    merged = []
    for claim_id in ids:
        meta = metas.get(claim_id) or {}
        if claim_id in current:
            claim = current[claim_id]
        elif claim_id in stored:
            row = stored[claim_id]
            claim = {**json.loads(row["payload"]),
                     "from_run": {"this_run": False, "started_at": row["started_at"], "git_rev": row["git_rev"]}}
        elif meta:
            claim = {**meta, "verdict": "never-run", "matches": True, "samples": [],
                     "message": "no result in the history yet", "from_run": None}
        else:
            continue
        # Results do not carry the claim's evidence; the claim file does.
        if meta.get("evidence") is not None:
            claim["evidence"] = meta["evidence"]
        merged.append(claim)
    return merged


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())


def _status(claim: Mapping[str, Any]) -> str:
    return "ok" if claim.get("matches", True) else "mismatch"


def _note(claim: Mapping[str, Any]) -> str:
    return str(claim.get("document") or "?")[:3]


def _from(claim: Mapping[str, Any]) -> str:
    origin = claim.get("from_run")
    return "never" if origin is None else ("this" if origin.get("this_run") else "earlier")


def _short_path(file: Any) -> str:
    """``expectations/...`` rather than the absolute path of whichever checkout ran it."""
    text = str(file or "")
    index = text.rfind("expectations/")
    return text[index:] if index >= 0 else text


def _guards_html(guards: Any) -> str:
    if not guards:
        return ""
    rows = []
    for guard in guards:
        passed = bool(guard.get("passed"))
        value = guard.get("value")
        value_text = format_number(float(value)) if isinstance(value, int | float) else _esc(value)
        arm = f" <small>arm {_esc(guard.get('arm'))}</small>" if guard.get("arm") else ""
        rows.append(
            f'<tr class="{"held" if passed else "failed"}"><td>{"holds" if passed else "FAILED"}</td>'
            f"<td><code>{_esc(guard.get('guard'))}</code>{arm}</td><td>{value_text}</td>"
            f"<td><small>{_esc(guard.get('why'))}</small></td></tr>"
        )
    return (
        '<div class="guards"><b>Guards (valid_when)</b><table><tr><th></th><th>guard</th><th>value</th>'
        f"<th>why</th></tr>{''.join(rows)}</table></div>"
    )


def _trend_html(claim: Mapping[str, Any], trend: Sequence[Mapping[str, Any]]) -> str:
    points = [p for p in trend if p.get("observed") is not None]
    if not points:
        return '<p class="muted">no observed values in the history yet</p>'
    labels = [f"{str(p['started_at'])[:10]} {(p.get('git_rev') or '')[:7]}".strip() for p in points]
    bounds = claim.get("bounds") or (-math.inf, math.inf)
    svg = series_svg(
        [{"values": [p["observed"] for p in points], "ci": [p.get("ci") for p in points],
          "colours": [VERDICT_COLOURS.get(p["verdict"], "#444") for p in points], "colour": "#57606a",
          "name": "observed"}],
        labels,
        band=(float(bounds[0]), float(bounds[1])),
        title=f"observed statistic of {claim['id']} over runs",
    )
    return f'<div class="trend"><small>observed statistic over {len(points)} run(s)</small>{svg}</div>'


def _claim_html(claim: Mapping[str, Any], trend: Sequence[Mapping[str, Any]]) -> str:
    verdict = str(claim.get("verdict"))
    status = _status(claim)
    colour = VERDICT_COLOURS.get(verdict, "#444")
    search = " ".join(
        str(claim.get(key) or "") for key in ("id", "statement", "quote", "document", "metric", "expected")
    ).lower()
    ci = claim.get("ci")
    observed = claim.get("observed")
    statistic = ""
    if observed is not None:
        ci_text = f", 95% CI [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
        statistic = (
            f"<p><b>{_esc(claim.get('statistic'))}</b> = <b>{format_number(observed)}</b>{ci_text} "
            f"<small>over {claim.get('n_seeds', 0)} seed(s)</small></p>"
        )
    improvement = claim.get("probability_of_improvement")
    if improvement is not None:
        poi_ci = claim.get("probability_of_improvement_ci")
        poi_text = f" [{format_number(poi_ci[0])}, {format_number(poi_ci[1])}]" if poi_ci else ""
        statistic += f"<p><small>probability of improvement {format_number(improvement)}{poi_text}</small></p>"
    origin = claim.get("from_run")
    origin_text = ""
    if origin and not origin.get("this_run"):
        origin_text = (
            f'<span class="tag earlier">from an earlier run: {_esc(str(origin.get("started_at"))[:19])} '
            f'{_esc((origin.get("git_rev") or "")[:10])}</span>'
        )
    details = ""
    if claim.get("message"):
        details += f'<p class="message">{_esc(claim["message"])}</p>'
    for warning in claim.get("warnings") or []:
        details += f'<p class="warning">{_esc(warning)}</p>'
    if claim.get("traceback"):
        details += f"<details><summary>traceback</summary><pre>{_esc(claim['traceback'])}</pre></details>"
    evidence = (
        f'<div class="evidence"><b>Evidence</b>{render_markdown(str(claim["evidence"]))}</div>'
        if claim.get("evidence") else ""
    )
    plot = strip_plot_svg(claim) if verdict != "never-run" else ""
    observed_text = f" · observed {format_number(observed)}" if observed is not None else ""
    headline = f"<code>{_esc(claim.get('expected'))}</code>{observed_text}"
    return f"""<article class="claim {status}" id="c-{_esc(claim['id'])}" data-verdict="{_esc(verdict)}"
 data-note="{_esc(_note(claim))}" data-line="{_esc(line_of(claim))}" data-kind="{_esc(claim.get('kind'))}"
 data-scale="{_esc(claim.get('scale'))}" data-status="{status}" data-from="{_from(claim)}"
 data-id="{_esc(claim['id'])}" data-search="{_esc(search)}">
<header><a class="cid" href="#c-{_esc(claim['id'])}">{_esc(claim['id'])}</a>
<span class="badge" style="background:{colour}">{_esc(verdict)}</span>
<span class="tag">recorded: {_esc(claim.get('recorded'))}</span>{'<span class="tag bad">MISMATCH</span>' if status == "mismatch" else ""}
{origin_text}<br><small>{_esc(claim.get('document'))} · {_esc(line_of(claim))} · {_esc(claim.get('kind'))} · {_esc(claim.get('scale'))}
 · <code>{_esc(_short_path(claim.get('file')))}:{_esc(claim.get('line'))}</code></small></header>
<details class="more"{" open" if status == "mismatch" or verdict != "reproduced" else ""}><summary>{headline}</summary>
<div class="body"><div class="text"><blockquote>{render_markdown(str(claim.get('quote') or ''))}</blockquote>
<p>{_esc(claim.get('statement'))}</p>
<p><b>Expects</b> <code>{_esc(claim.get('expected'))}</code><br><small><b>why:</b> {_esc(claim.get('why'))}</small></p>
{evidence}{_guards_html(claim.get('guards'))}{details}</div>
<div class="figs">{plot}{statistic}{_trend_html(claim, trend)}</div></div></details></article>"""


def _count_table(title: str, key: str, claims: Sequence[Mapping[str, Any]], value_of: Any) -> str:
    groups: dict[str, Counter[str]] = {}
    for claim in claims:
        groups.setdefault(value_of(claim), Counter())[str(claim.get("verdict"))] += 1
    verdicts = [v for v in VERDICT_ORDER if any(v in c for c in groups.values())]
    head = "".join(f"<th>{_esc(v)}</th>" for v in verdicts)
    rows = []
    for group in sorted(groups):
        cells = "".join(
            f'<td><a href="#claims" data-set="{key}={_esc(group)}&amp;verdict={_esc(v)}">{groups[group][v]}</a></td>'
            if groups[group][v] else "<td></td>"
            for v in verdicts
        )
        total = sum(groups[group].values())
        rows.append(f'<tr><th><a href="#claims" data-set="{key}={_esc(group)}">{_esc(group)}</a></th>'
                    f"<td>{total}</td>{cells}</tr>")
    return f'<table class="counts"><caption>{title}</caption><tr><th></th><th>all</th>{head}</tr>{"".join(rows)}</table>'


def _options(name: str, values: Iterable[str], label: str) -> str:
    options = "".join(f'<option value="{_esc(v)}">{_esc(v)}</option>' for v in values)
    return f'<label>{label} <select id="f-{name}" data-filter="{name}"><option value="">all</option>{options}</select></label>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#24292f;background:#f6f8fa}
nav.top{position:sticky;top:0;background:#24292f;color:#fff;padding:8px 20px;z-index:2}
nav.top a{color:#fff;margin-right:16px;text-decoration:none;font-weight:600}
main{padding:12px 20px;max-width:1500px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:18px 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;text-decoration:none;color:inherit;min-width:92px}
.card b{display:block;font-size:22px}.card.bad{border-color:#cf222e;background:#fff1f0}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
table.counts{border-collapse:collapse;background:#fff;font-size:13px}
table.counts caption{text-align:left;font-weight:600;padding:4px 0}
table.counts td,table.counts th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
table.counts th:first-child{text-align:left}
.mismatches{background:#fff;border:1px solid #cf222e;border-radius:6px;padding:8px 14px;max-height:260px;overflow:auto}
.mismatches li{margin:2px 0}
.controls{position:sticky;top:36px;background:#f6f8fa;padding:8px 0;z-index:1;display:flex;flex-wrap:wrap;gap:10px;align-items:center;border-bottom:1px solid #d0d7de}
.controls input{width:260px;padding:4px}
.claim{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:10px 0;padding:10px 14px}
.claim[hidden]{display:none}
details.more>summary{cursor:pointer;color:#57606a;font-size:13px;margin:4px 0}
.claim.mismatch{border-left:5px solid #cf222e}
.claim header .cid{font-weight:700;font-size:15px;color:#0969da;text-decoration:none}
.badge{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;margin-left:6px}
.tag{border:1px solid #d0d7de;border-radius:10px;padding:0 7px;font-size:12px;margin-left:6px;color:#57606a}
.tag.bad{border-color:#cf222e;color:#cf222e;font-weight:700}.tag.earlier{border-style:dashed}
.body{display:flex;flex-wrap:wrap;gap:16px}.text{flex:1 1 480px;min-width:320px}.figs{flex:0 0 470px}
blockquote{margin:6px 0;padding:2px 10px;border-left:3px solid #d0d7de;color:#57606a}
blockquote p{margin:4px 0}table.md{border-collapse:collapse;font-size:12px;margin:4px 0}
table.md td,table.md th{border:1px solid #d0d7de;padding:2px 6px}
.guards table{border-collapse:collapse;font-size:12px}.guards td,.guards th{border:1px solid #d0d7de;padding:2px 6px}
.guards tr.failed td:first-child{color:#cf222e;font-weight:700}.guards tr.held td:first-child{color:#1a7f37}
.evidence{background:#f6f8fa;border-radius:4px;padding:4px 8px;margin:6px 0;font-size:13px}
.message{font-size:13px;color:#57606a}.warning{font-size:13px;color:#9a6700}.muted{color:#8c959f;font-size:12px}
pre{white-space:pre-wrap;font-size:12px}
.kernel{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:10px 0;padding:10px 14px}
.change-slower{color:#cf222e;font-weight:700}.change-faster{color:#1a7f37;font-weight:700}
"""

_JS = """
(function () {
  var list = document.getElementById('claims-list');
  if (!list) return;
  var rows = Array.prototype.slice.call(list.querySelectorAll('article.claim'));
  var filters = Array.prototype.slice.call(document.querySelectorAll('[data-filter]'));
  var search = document.getElementById('f-q'), sorter = document.getElementById('f-sort');
  var shown = document.getElementById('shown');
  var severity = {'refuted':0,'not-reproduced':1,'error':2,'inconclusive':3,'reproduced':4,'skipped':5,'never-run':6};
  function apply() {
    var q = search.value.trim().toLowerCase(), n = 0;
    rows.forEach(function (row) {
      var ok = filters.every(function (f) { return !f.value || row.dataset[f.dataset.filter] === f.value; });
      if (ok && q) ok = q.split(/\\s+/).every(function (w) { return row.dataset.search.indexOf(w) >= 0; });
      row.hidden = !ok; if (ok) n += 1;
    });
    shown.textContent = n;
  }
  function compare(a, b) {
    var key = sorter.value, x = a.dataset, y = b.dataset, d = 0;
    if (key === 'mismatch') d = (x.status === 'mismatch' ? 0 : 1) - (y.status === 'mismatch' ? 0 : 1);
    if (key === 'mismatch' || key === 'verdict') d = d || severity[x.verdict] - severity[y.verdict];
    if (key === 'note') d = x.note < y.note ? -1 : (x.note > y.note ? 1 : 0);
    if (key === 'line') d = x.line < y.line ? -1 : (x.line > y.line ? 1 : 0);
    return d || (x.id < y.id ? -1 : (x.id > y.id ? 1 : 0));
  }
  function sort() { rows.slice().sort(compare).forEach(function (row) { list.appendChild(row); }); }
  filters.forEach(function (f) { f.addEventListener('change', apply); });
  search.addEventListener('input', apply);
  sorter.addEventListener('change', sort);
  document.getElementById('f-reset').addEventListener('click', function () {
    filters.forEach(function (f) { f.value = ''; }); search.value = ''; apply();
  });
  function expand(open) {
    rows.forEach(function (row) { if (!row.hidden) row.querySelector('details.more').open = open; });
  }
  document.getElementById('f-open').addEventListener('click', function () { expand(true); });
  document.getElementById('f-close').addEventListener('click', function () { expand(false); });
  Array.prototype.forEach.call(document.querySelectorAll('[data-set]'), function (link) {
    link.addEventListener('click', function () {
      filters.forEach(function (f) { f.value = ''; }); search.value = '';
      link.dataset.set.split('&').forEach(function (pair) {
        var kv = pair.split('='), el = document.getElementById('f-' + kv[0]);
        if (el) el.value = kv[1];
      });
      apply();
    });
  });
  sort(); apply();
})();
"""


def render_html(
    run: RunInfo,
    results: Sequence[Mapping[str, Any]],
    series: Mapping[str, Any] | None = None,
    *,
    trends: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    benchmarks_html: str = "",
    partial_note: str = "",
) -> str:
    """The dashboard for ``results`` (already merged). ``series`` is accepted for old callers and unused."""
    claims = list(results)
    trends = trends or {}
    counts = Counter(str(c.get("verdict")) for c in claims)
    mismatched = [c for c in claims if not c.get("matches", True)]
    cards = "".join(
        f'<a class="card" href="#claims" data-set="verdict={_esc(v)}" style="border-top:4px solid '
        f'{VERDICT_COLOURS.get(v, "#444")}"><b>{counts[v]}</b>{_esc(v)}</a>'
        for v in VERDICT_ORDER if counts[v]
    )
    cards = (
        f'<a class="card" href="#claims" data-set=""><b>{len(claims)}</b>claims</a>'
        f'<a class="card{" bad" if mismatched else ""}" href="#claims" data-set="status=mismatch">'
        f"<b>{len(mismatched)}</b>differ from the record</a>" + cards
    )
    earlier = sum(_from(c) == "earlier" for c in claims)
    mismatch_list = "".join(
        f'<li><a href="#c-{_esc(c["id"])}">{_esc(c["id"])}</a> recorded <b>{_esc(c.get("recorded"))}</b>, '
        f'observed <b style="color:{VERDICT_COLOURS.get(str(c.get("verdict")), "#444")}">{_esc(c.get("verdict"))}</b></li>'
        for c in sorted(mismatched, key=lambda c: (VERDICT_ORDER.index(c["verdict"])
                                                   if c.get("verdict") in VERDICT_ORDER else 99, c["id"]))
    )
    mismatch_block = (
        f'<div class="mismatches"><b>Mismatches first</b><ul>{mismatch_list}</ul></div>' if mismatched else ""
    )
    notes = sorted({_note(c) for c in claims})
    lines = sorted({line_of(c) for c in claims})
    kinds = sorted({str(c.get("kind")) for c in claims})
    scales = sorted({str(c.get("scale")) for c in claims})
    verdicts = [v for v in VERDICT_ORDER if counts[v]]
    body = "".join(_claim_html(c, trends.get(c["id"], ())) for c in claims)
    versions = _esc(json.dumps(run.versions))
    bench_link = '<a href="#benchmarks">Benchmarks</a>' if benchmarks_html else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">{_HTML_TITLE}
<style>{_CSS}</style></head><body>
<nav class="top"><a href="#summary">Summary</a><a href="#claims">Claims</a>{bench_link}</nav><main>
<section id="summary"><h1>reprolab claims ledger</h1>
<p><small>run {_esc(run.run_id[:12])} at {_esc(run.started_at)} · git {_esc(run.git_rev or "n/a")} · {_esc(run.machine)}
 · <code>{_esc(run.command)}</code>{f" · {earlier} claim(s) shown from earlier runs" if earlier else ""}</small></p>
{partial_note}
<div class="cards">{cards}</div>
<div class="grid">{mismatch_block}{_count_table("by note", "note", claims, _note)}{_count_table("by line", "line", claims, line_of)}</div>
<p><small>Plot: one dot per seed (the metric; its paired difference for two-arm claims; 1/0 for whether a seed
satisfies a fraction's predicate), green is the accepted band with its bound labelled, the black bar is the
statistic and the line under it its 95% CI. The trend shows the observed statistic of every recorded run,
coloured by that run's verdict. <small>{versions}</small></small></p></section>
<section id="claims"><h2>Claims</h2>
<div class="controls"><label>search <input id="f-q" type="search" placeholder="id, quote, statement, metric"></label>
{_options("verdict", verdicts, "verdict")}{_options("note", notes, "note")}{_options("line", lines, "line")}
{_options("kind", kinds, "kind")}{_options("scale", scales, "scale")}{_options("status", ["mismatch", "ok"], "record")}
{_options("from", ["this", "earlier", "never"], "result from")}
<label>sort <select id="f-sort"><option value="mismatch">mismatches first</option><option value="verdict">verdict</option>
<option value="note">note</option><option value="line">line</option><option value="id">id</option></select></label>
<button id="f-reset" type="button">reset</button> <button id="f-open" type="button">expand all</button>
<button id="f-close" type="button">collapse all</button> <span><b id="shown">{len(claims)}</b> of {len(claims)} shown</span></div>
<div id="claims-list">{body}</div></section>
{benchmarks_html}
</main><script>{_JS}</script></body></html>"""


def _bench_html(history: History | None, bench_config: Path | None) -> str:
    if history is None:
        return ""
    from reprolab.bench.page import benchmarks_section

    config = bench_config or history.path.parent.parent / "benchmarks" / "kernels.yaml"
    return benchmarks_section(history.path, config)


def write_reports(
    report_dir: Path,
    run: RunInfo,
    results: Sequence[Mapping[str, Any]],
    series: Mapping[str, Any] | None = None,
    *,
    history: History | None = None,
    suite: Iterable[Any] | None = None,
    since: str | None = None,
    write_partial: bool = True,
    bench_config: Path | None = None,
) -> tuple[Path, ...]:
    """Write ``latest.json`` / ``latest.html`` (every suite claim's newest result, merged from ``history``)
    and, when this run checked only part of the suite, ``run-<time>-<id>.{json,html}`` with its own results.

    ``suite``: every claim of the suite (LoadedClaim objects, or ids); without it, the claims known to the
    history. Without ``history`` nothing is merged (the old behaviour). ``series`` is ignored (old callers).
    Returns the written paths, latest.json and latest.html first.
    """
    report_dir = Path(report_dir)
    suite = list(suite) if suite is not None else None
    merged = merge_latest(run, results, history, suite, since)
    trends = history.observed_series(since) if history is not None else {}
    checked = {r["id"] for r in results}
    partial = write_partial and any(c["id"] not in checked for c in merged)
    benchmarks_html = _bench_html(history, bench_config)
    stamp = re.sub(r"[^0-9T]", "", run.started_at)[:15]
    own = f"run-{stamp}-{run.run_id[:8]}"
    note = (
        f'<p class="warning">This run checked {len(checked)} of {len(merged)} claims; the others show their '
        f'latest result from the history. This run alone: <a href="{own}.html">{own}.html</a></p>'
        if partial else ""
    )
    json_path, html_path = report_dir / "latest.json", report_dir / "latest.html"
    _refuse_foreign([json_path, html_path, *((report_dir / f"{own}{ext}" for ext in (".json", ".html")) if partial else ())])
    payload = {"run": run.__dict__, "partial_run": partial, "claims": merged}
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str, allow_nan=True))
    atomic_write_text(
        html_path, render_html(run, merged, trends=trends, benchmarks_html=benchmarks_html, partial_note=note)
    )
    written: list[Path] = [json_path, html_path]
    if partial:
        own_results = [c for c in merged if c["id"] in checked]
        own_json, own_html = report_dir / f"{own}.json", report_dir / f"{own}.html"
        atomic_write_text(own_json, json.dumps({"run": run.__dict__, "partial_run": True, "claims": own_results},
                                               indent=2, default=str, allow_nan=True))
        back = '<p><a href="latest.html">the whole suite: latest.html</a></p>'
        atomic_write_text(own_html, render_html(run, own_results, trends=trends, partial_note=back))
        written += [own_json, own_html]
    return tuple(written)
