"""Rendering: sections of tables, figures and text as one self-contained HTML page (CSS inline,
every image a base64 PNG data URI, no script, nothing fetched) and as Markdown (the tables).

A section is a title and a list of blocks: `Text(str)`, `TableBlock(caption, table, best)` where
`best` ("column", "row" or None) bolds the highest figure per column or per row, and
`Figure(caption, png bytes)`.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Sequence, Union

from skipseg.report.tables import MISSING, Table, markdown

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; line-height: 1.4; background: #fff; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; border-bottom: 1px solid #ccc;
     padding-bottom: 4px; margin-top: 36px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .note { color: #666; font-size: 13px; } nav a { margin-right: 14px; font-size: 14px; color: #335; }
table { border-collapse: collapse; margin: 6px 0 18px; font-size: 13px; }
p.caption { font-weight: bold; margin: 14px 0 4px; font-size: 14px; }
th { background: #e8ecf1; border: 1px solid #b8bec6; padding: 4px 9px; text-align: left; }
td { border: 1px solid #ccd; padding: 3px 9px; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; } tr:nth-child(even) td { background: #f7f8fa; }
.scroll { overflow-x: auto; } figure { margin: 10px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; margin-top: 4px; }
"""


@dataclass
class Text:
    text: str


@dataclass
class TableBlock:
    caption: str
    table: Table
    best: str | None = None  # "column" | "row": bold the highest number of each
    plain: tuple[int, ...] = ()  # columns that are counts, not scores: never bold


@dataclass
class Figure:
    caption: str
    png: bytes


Block = Union[Text, TableBlock, Figure]


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _best_cells(rows: Sequence[Sequence[str]], best: str | None, plain: Sequence[int] = ()) -> set[tuple[int, int]]:
    """(row, column) of the highest number per column or per row; ties are all bold, and a row or
    column whose numbers are all equal has no best. Column 0 is a name."""
    numbers = [[_number(str(c)) if j and j not in plain else None for j, c in enumerate(row)] for row in rows]
    if best == "row":
        lines = [[((i, j), v) for j, v in enumerate(row)] for i, row in enumerate(numbers)]
    elif best == "column" and numbers:
        lines = [[((i, j), numbers[i][j]) for i in range(len(numbers))] for j in range(len(numbers[0]))]
    else:
        return set()
    cells: set[tuple[int, int]] = set()
    for line in lines:
        values = [v for _, v in line if v is not None]
        if len(set(values)) > 1:
            cells |= {cell for cell, v in line if v == max(values)}
    return cells


def table_html(block: TableBlock) -> str:
    header, rows = block.table
    bold = _best_cells(rows, block.best, block.plain)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            numeric = j and (_number(str(cell)) is not None or cell == MISSING)
            classes = (["num"] if numeric else []) + (["best"] if (i, j) in bold else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<p class="caption">{html.escape(block.caption)}</p><div class="scroll"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def figure_html(block: Figure) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    caption = html.escape(block.caption)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render_html(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page; sections without blocks are left out."""
    shown = [s for s in sections if s.blocks]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", *(f'<p class="meta">{html.escape(m)}</p>' for m in meta),
             "<nav>" + "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in shown) + "</nav>"]
    for section in shown:
        parts.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, TableBlock):
                parts.append(table_html(block))
            elif isinstance(block, Figure):
                parts.append(figure_html(block))
            else:
                parts.append(f'<p class="note">{html.escape(block.text)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The tables and notes as Markdown; figures are named and left to report.html."""
    lines = [f"# {title}", "", *(f"{m}  " for m in meta), ""]
    for section in (s for s in sections if s.blocks):
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, TableBlock):
                lines += [f"{block.caption}", "", markdown(block.table), ""]
            elif isinstance(block, Figure):
                lines += [f"*Figure (in report.html): {block.caption}*", ""]
            else:
                lines += [block.text, ""]
    return "\n".join(lines).rstrip() + "\n"
