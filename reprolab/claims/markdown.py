"""A small, safe markdown renderer for quotes: the text is HTML-escaped first, so nothing in a note can inject
markup; then bold, italics, inline code, pipe tables and paragraphs are turned into HTML."""

from __future__ import annotations

import html
import re

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])|(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$")


def _inline(text: str) -> str:
    """Inline markup on already-escaped text; code spans are protected from the other rules."""
    codes: list[str] = []

    def keep(match: re.Match[str]) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep, text)
    text = _BOLD.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", text)
    text = _ITALIC.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [cell.strip() for cell in line.split("|")]


def _table(lines: list[str]) -> str:
    header, body = lines[0], lines[1:]
    has_header = bool(body) and _TABLE_RULE.match(body[0].strip()) is not None
    rows = body[1:] if has_header else lines
    out = ["<table class=\"md\">"]
    if has_header:
        out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(header)) + "</tr>")
    out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(row)) + "</tr>" for row in rows)
    out.append("</table>")
    return "".join(out)


def render_markdown(text: str) -> str:
    """HTML for ``text``: escape everything, then paragraphs, line breaks, tables, bold, italics, code."""
    # NUL marks the code-span placeholders below (and is no character of HTML): a NUL in the text is dropped, so
    # a quote cannot name a placeholder (an IndexError that failed the whole report, or another span's code)
    escaped = html.escape((text or "").replace("\x00", ""), quote=True)
    blocks: list[str] = []
    paragraph: list[str] = []
    table: list[str] = []

    def flush_paragraph() -> None:
        if paragraph:
            blocks.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def flush_table() -> None:
        if table:
            blocks.append(_table(table))
            table.clear()

    for raw in escaped.splitlines():
        line = raw.strip()
        if line.startswith("|") and line.count("|") >= 2:
            flush_paragraph()
            table.append(line)
            continue
        flush_table()
        if not line:
            flush_paragraph()
        else:
            paragraph.append(line)
    flush_table()
    flush_paragraph()
    return "".join(blocks)
