"""The report's one HTML page, plus the Markdown/CSV copies of its tables.

:func:`write_page` writes a single self-contained HTML5 file: PNGs are embedded as base64
``data:`` URIs (each with a link to its file beside it), tables are rendered inline (each with
links to its CSV and Markdown copies), and the CSS is inline, so the page opens offline and
references nothing on the network. Every string that reaches the page is escaped.

Cells are formatted the same way in HTML and Markdown (:func:`format_value`): floats to three
decimals (tiny non-zero ones in scientific notation, so a p-value never reads ``0.000``),
booleans as ``yes``/``no``, missing values (None, NaN, NA, NaT) as an en dash; a float column
of whole numbers beyond 0/1 (LUTs, operation counts, ε in pixels) without decimals.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

MISSING = "\u2013"
"""What a missing value (None, NaN, NA, NaT) reads as: an en dash."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_ITEMS = 6


@dataclass
class Figure:
    """A PNG plot: embedded in the page, linked to its file."""

    title: str
    png: Path
    caption: str = ""


@dataclass
class Table:
    """A table rendered on the page, linked to its CSV and Markdown copies when given."""

    title: str
    frame: pd.DataFrame
    csv: Path | None = None
    markdown: Path | None = None
    caption: str = ""


@dataclass
class Section:
    """A titled part of the page: intro text (blank lines split paragraphs), tables, figures."""

    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# cell formatting


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(isinstance(value, (float, np.floating)) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def format_value(value) -> str:
    """One table cell as text (the rules in the module docstring)."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isinf(x):
            return "\u221e" if x > 0 else "\u2212\u221e"
        if x != 0 and abs(x) < 5e-4:
            return f"{x:.2e}"
        return f"{x:.3f}"
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        text = ", ".join(format_value(v) for v in items[:_MAX_ITEMS])
        if len(items) > _MAX_ITEMS:
            text += f", \u2026 ({len(items)} items)"
        return f"[{text}]"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as shown: a named index becomes columns, an unnamed one is dropped."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    else:
        frame = frame.reset_index(drop=True)
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.copy()
        frame.columns = [
            " / ".join(str(p) for p in col if str(p) != "") for col in frame.columns.to_flat_index()
        ]
    return frame


def _numeric(series: pd.Series) -> bool:
    """Whether a column is right-aligned: numbers (also in an object column), not booleans."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    values = [v for v in series if not _is_missing(v)]
    return bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        for v in values
    )


def _counts(series: pd.Series) -> bool:
    """A float column of whole numbers beyond 0/1 (LUTs, operations, ε in pixels): no decimals."""
    values = [v for v in series if isinstance(v, (float, np.floating)) and not _is_missing(v)]
    return (
        bool(values)
        and all(math.isfinite(v) and float(v).is_integer() for v in values)
        and max(abs(v) for v in values) >= 2
    )


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[bool], list[list[str]]]:
    frame = _flat(frame)
    headers = [str(c) for c in frame.columns]
    numeric = [_numeric(frame.iloc[:, i]) for i in range(frame.shape[1])]
    counts = [_counts(frame.iloc[:, i]) for i in range(frame.shape[1])]
    rows = [
        [
            str(int(v))
            if whole and isinstance(v, (float, np.floating)) and not _is_missing(v)
            else format_value(v)
            for v, whole in zip(row, counts, strict=True)
        ]
        for row in frame.itertuples(index=False, name=None)
    ]
    return headers, numeric, rows


# --------------------------------------------------------------------------------------------
# tables


def _md_cell(text: str) -> str:
    text = " ".join(text.split())  # no line breaks inside a pipe-table row
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub pipe table of ``frame`` (numbers right-aligned), ending with a newline."""
    headers, numeric, rows = _cells(frame)
    if not headers:
        return ""
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_tables(frame: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.csv`` (full precision) and ``stem.md`` (:func:`markdown_table`)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_name(stem.name + ".csv")
    md_path = stem.with_name(stem.name + ".md")
    _flat(frame).to_csv(csv_path, index=False)
    md_path.write_text(markdown_table(frame), encoding="utf-8")
    return csv_path, md_path


def _html_table(frame: pd.DataFrame) -> str:
    headers, numeric, rows = _cells(frame)
    esc = html.escape

    def cls(i: int) -> str:
        return ' class="num"' if numeric[i] else ""

    head = "".join(f'<th scope="col"{cls(i)}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{max(len(headers), 1)}" class="empty">no rows</td></tr>'
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# --------------------------------------------------------------------------------------------
# figures


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR header; ValueError if not a PNG."""
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def _href(target: Path, page: Path) -> str:
    """A URL for ``target`` relative to the page's folder (absolute file URI if impossible)."""
    target = Path(target).resolve()
    try:
        rel = os.path.relpath(target, page.resolve().parent)
    except ValueError:  # another drive on Windows
        return target.as_uri()
    return quote(Path(rel).as_posix())


# --------------------------------------------------------------------------------------------
# page

_CSS = """
:root { --fg:#1d2430; --muted:#5b6472; --line:#d9dde3; --bg:#ffffff; --panel:#f5f7fa;
  --accent:#1f5fa8; --stripe:#f8f9fb; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "Liberation Sans", "DejaVu Sans", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover, a:focus { text-decoration: underline; }
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 28px; }
header.top { background: var(--panel); border-bottom: 1px solid var(--line); padding: 22px 0 16px; }
header.top h1 { margin: 0 0 10px; font-size: 26px; line-height: 1.25; font-weight: 650; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0;
  font-size: 13px; }
dl.meta dt { color: var(--muted); font-weight: 600; }
dl.meta dd { margin: 0; overflow-wrap: anywhere;
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
nav.toc { margin: 20px 0 8px; padding: 12px 18px; width: fit-content; min-width: 320px;
  border: 1px solid var(--line); border-radius: 6px; background: var(--bg); }
nav.toc h2 { margin: 0 0 6px; font-size: 14px; text-transform: uppercase;
  letter-spacing: .05em; color: var(--muted); }
nav.toc ol { margin: 0; padding-left: 22px; }
nav.toc ol ol { padding-left: 18px; font-size: 13px; color: var(--muted); }
nav.toc li { margin: 1px 0; }
section.part { margin: 30px 0 10px; padding-top: 4px; border-top: 2px solid var(--line); }
section.part > h2 { font-size: 21px; margin: 14px 0 8px; }
section.part p.intro { margin: 6px 0 12px; max-width: 80ch; }
h3 { font-size: 16px; margin: 22px 0 8px; }
.block { margin: 0 0 24px; }
.scroll { overflow: auto; width: fit-content; max-width: 100%; max-height: 75vh;
  border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: separate; border-spacing: 0; font-size: 13px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; white-space: nowrap; }
thead th { background: var(--panel); font-weight: 600; border-bottom: 2px solid var(--line);
  position: sticky; top: 0; z-index: 2; }
tbody td { background: var(--bg); }
tbody tr:nth-child(even) td { background: var(--stripe); }
tbody tr:hover td { background: #eef3fa; }
th:first-child, td:first-child { position: sticky; left: 0; z-index: 1;
  box-shadow: inset -1px 0 0 var(--line); }
thead th:first-child { z-index: 3; }
tbody tr:last-child td { border-bottom: 0; }
th.num, td.num { text-align: right; }
td.empty { color: var(--muted); font-style: italic; }
.caption { color: var(--muted); font-size: 13px; margin: 6px 0 0; max-width: 90ch; }
.links { font-size: 13px; margin: 6px 0 0; color: var(--muted); }
.links a { margin-right: 12px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
  gap: 18px 22px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 6px; background: #fff; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; }
figcaption strong { color: var(--fg); font-weight: 600; }
footer { margin: 40px 0 24px; padding-top: 10px; border-top: 1px solid var(--line);
  color: var(--muted); font-size: 12px; }
@media print { nav.toc { display: none; } .scroll { overflow: visible; max-height: none; } }
"""


class _Ids:
    """Unique, readable anchor ids."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, text: str, fallback: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or fallback
        ident, n = base, 2
        while ident in self.seen:
            ident, n = f"{base}-{n}", n + 1
        self.seen.add(ident)
        return ident


def _paragraphs(text: str, cls: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join(f'<p class="{cls}">{html.escape(p)}</p>\n' for p in paras)


def _link(label: str, target: Path, page: Path) -> str:
    href = html.escape(_href(target, page), quote=True)
    name = html.escape(Path(target).name)
    return f'<a href="{href}" title="{name}">{html.escape(label)}</a>'


def _table_block(table: Table, ident: str, page: Path) -> str:
    esc = html.escape
    parts = [f'<div class="block table" id="{ident}">', f"<h3>{esc(table.title)}</h3>"]
    parts.append(f'<div class="scroll">{_html_table(table.frame)}</div>')
    if table.caption:
        parts.append(f'<p class="caption">{esc(table.caption)}</p>')
    links = [_link(k, p, page) for k, p in (("CSV", table.csv), ("Markdown", table.markdown)) if p]
    if links:
        parts.append(f'<p class="links">{" ".join(links)}</p>')
    parts.append("</div>")
    return "\n".join(parts)


def _figure_block(fig: Figure, ident: str, page: Path) -> str:
    esc = html.escape
    data = Path(fig.png).read_bytes()
    width, height = png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    alt = esc(fig.title + (f": {fig.caption}" if fig.caption else ""), quote=True)
    caption = f"<strong>{esc(fig.title)}</strong>"
    if fig.caption:
        caption += f" \u2014 {esc(fig.caption)}"
    return (
        f'<figure class="block" id="{ident}">\n'
        f'<img src="{uri}" alt="{alt}" width="{width}" height="{height}" decoding="async">\n'
        f"<figcaption>{caption}<br>"
        f'<span class="links">{_link("PNG", fig.png, page)}</span></figcaption>\n'
        "</figure>"
    )


def write_page(
    path: Path, title: str, sections: list[Section], meta: dict[str, str] | None = None
) -> Path:
    """Write the self-contained HTML page to ``path`` and return it.

    ``meta`` items (store, hwbed version, date, ...) fill the header block; each section shows
    its intro, tables, then figures, and the table of contents links to all of them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    ids = _Ids()
    toc, body = [], []
    for s_no, section in enumerate(sections, 1):
        sid = ids(section.title, f"section-{s_no}")
        items, blocks = [], []
        for t_no, table in enumerate(section.tables, 1):
            tid = ids(f"{sid}-{table.title}", f"{sid}-table-{t_no}")
            items.append(f'<li><a href="#{tid}">{esc(table.title)}</a></li>')
            blocks.append(_table_block(table, tid, path))
        figures = []
        for f_no, fig in enumerate(section.figures, 1):
            fid = ids(f"{sid}-{fig.title}", f"{sid}-figure-{f_no}")
            items.append(f'<li><a href="#{fid}">{esc(fig.title)}</a></li>')
            figures.append(_figure_block(fig, fid, path))
        if figures:
            blocks.append('<div class="figures">\n' + "\n".join(figures) + "\n</div>")
        sub = f"<ol>{''.join(items)}</ol>" if items else ""
        toc.append(f'<li><a href="#{sid}">{esc(section.title)}</a>{sub}</li>')
        body.append(
            f'<section class="part" id="{sid}">\n<h2>{esc(section.title)}</h2>\n'
            + _paragraphs(section.intro, "intro")
            + "\n".join(blocks)
            + "\n</section>"
        )
    meta_html = ""
    if meta:
        rows = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in meta.items())
        meta_html = f'<dl class="meta">{rows}</dl>'
    toc_html = ""
    if toc:
        toc_html = f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>\n'
    from hwbed import __version__

    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="hwbed {esc(__version__)}">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="top"><div class="wrap"><h1>{esc(title)}</h1>{meta_html}</div></header>\n'
        f'<main class="wrap">\n{toc_html}'
        + "\n".join(body)
        + f"\n<footer>Generated by hwbed {esc(__version__)}.</footer>\n</main>\n</body>\n</html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
