"""The HTML pieces of every trainlab page: escaping, tables, notes, sections, embedded PNGs, the CSS.

A page has no scripts and loads nothing: figures are PNGs embedded as base64 data URIs, the CSS is
inline, the fonts are the viewer's own.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING, Any, Sequence

from .plots import DPI

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def png_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI (the figure is cleared afterwards, freeing its artists)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_image(fig: Figure, alt: str) -> str:
    return f'<figure><img src="{png_data_uri(fig)}" alt="{html.escape(alt)}"></figure>'


def escape(value: Any) -> str:
    return html.escape(str(value))


def cell_text(v: Any) -> str:
    """A table cell's text: "–" for None and non-finite floats, 4 significant digits for floats."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    return escape(v)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], first_col_text: bool = True) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join((f"<th scope='row'>{escape(c)}</th>" if i == 0 and first_col_text
                          else f"<td>{cell_text(c)}</td>") for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_note(text: str, code: str = "", after: str = "") -> str:
    """A short italic note; `code` (a command) is set in <code> between `text` and `after`."""
    cmd = f"<code>{escape(code)}</code>" if code else ""
    return f'<p class="note">{escape(text)}{cmd}{escape(after)}</p>'


def html_section(anchor: str, title: str, body: str, css: str = "") -> tuple[str, str, str]:
    cls = f' class="{css}"' if css else ""
    return anchor, title, f'<section id="{anchor}"{cls}><h2>{escape(title)}</h2>{body}</section>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:1em 2em;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}nav{font-size:.9em;margin:.6em 0}nav a{margin-right:1em;color:#1f5fa8;text-decoration:none}
.meta{color:#555;font-size:.9em}.note{color:#777;font-style:italic}
section.side{display:inline-block;vertical-align:top;margin-right:1.5em;max-width:100%}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0}
img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f6f6f6}
th[scope=row]{text-align:left;font-weight:normal;background:#fafafa}
.wide{overflow-x:auto;max-width:100%}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em;border:1px solid #eee}
code{background:#f0f2f4;padding:.05em .35em;border-radius:3px;font-size:.9em}
ul.findings{padding-left:1.2em}ul.findings li{margin-bottom:.6em}
.kind{font-weight:bold;display:inline-block;min-width:7em}
.k-healthy,.k-best_epoch{color:#2a7a2a}.k-overfitting,.k-underfitting,.k-lr_too_high,.k-lr_too_low,
.k-instability{color:#b35c00}.k-divergence{color:#b00020}
"""


def html_page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    body = "\n".join(s for _, _, s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class='meta'>{subtitle}</p><nav>{nav}</nav>\n{body}\n</body></html>\n")
