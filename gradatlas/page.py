"""The one HTML layer of GradAtlas's pages (the grid report and the study presets' pages).

Jinja2 with autoescaping: every value is escaped unless it is a `Markup` fragment built here. Pages
are self-contained: figures are embedded as PNG data URIs, no JavaScript, no external resources.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import jinja2
from markupsafe import Markup

ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #0173b2;padding-bottom:.15em;margin-top:2em}
figure{margin:1em 0 2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#333;font-size:.95em;background:#f6f8fa;padding:.5em .8em;border-left:3px solid #0173b2}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0 1em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right;overflow-wrap:break-word}th{background:#eef2f6}
table{max-width:100%}table.sortable th{cursor:pointer}
.scroll{overflow-x:auto;max-width:100%}.answer td,.answer th{white-space:normal;text-align:left}
td:first-child,th:first-child{text-align:left}
.facts td{text-align:left}.note{color:#555;font-size:.92em}
nav ol{columns:2;list-style:none;padding-left:1em}details{margin:.5em 0}\
details pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
ul.findings li{margin:.35em 0}ul.first li{margin:.5em 0;font-size:1.02em}
.answer{background:#f3f8fc;border:1px solid #b9d3ea;border-radius:6px;padding:.6em 1.2em;margin:1em 0}
.answer h3{margin:.5em 0 .2em 0}.caveat{background:#fff7e0;border-left:4px solid #de8f05;padding:.5em .8em}
.verdict{padding:.5em;border-radius:4px}.ok{background:#e3f5e1}.no{background:#fbe3e3}img{max-width:100%}
code{background:#f3f3f3}
"""

_PAGE = ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ css }}</style></head><body>
<h1>{{ heading }}</h1>
{% for block in intro %}{{ block }}{% endfor %}
{% if nav %}<nav><ol>{% for s in sections %}\
<li><a href="#{{ s.key }}">{{ s.title }}</a></li>{% endfor %}</ol></nav>{% endif %}
{% for s in sections %}<section id="{{ s.key }}">{% if s.title %}<h2>{{ s.title }}</h2>{% endif %}
{% for block in s.blocks %}{{ block }}
{% endfor %}</section>
{% endfor %}</body></html>
"""
)
_FIGURE = ENV.from_string(
    '<figure id="fig-{{ name }}"><img alt="{{ title }}" src="{{ src }}">'
    "<figcaption><b>{{ title }}.</b> {{ caption }}</figcaption></figure>"
)
_TABLE = ENV.from_string(
    """<div class="scroll"><table{% if cls %} class="{{ cls }}"{% endif %}><thead><tr>{% for c in columns %}\
<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></div>
{% if more %}<p class="note">{{ more }} more rows in the CSV.</p>{% endif %}"""
)
# sorting by a click on a column's header: a few lines, the table reads the same without them
_SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], up = th.dataset.up !== '1';
  const key = r => { const t = r.cells[i].textContent, n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
    .forEach(r => body.appendChild(r));
  th.dataset.up = up ? '1' : '0';
}));
</script>"""
_FACTS = ENV.from_string(
    '<table class="facts">{% for k, v in rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>'
)
_LIST = ENV.from_string('<ul class="{{ cls }}">{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>')
_TAG = ENV.from_string('<{{ tag }}{% if cls %} class="{{ cls }}"{% endif %}>{{ text }}</{{ tag }}>')
_DETAILS = ENV.from_string("<details><summary>{{ summary }}</summary><pre>{{ text }}</pre></details>")


def render(template: str, **values) -> Markup:
    """A fragment from a template string (autoescaped values), for a page's blocks."""
    return Markup(ENV.from_string(template).render(**values))


def page(title: str, heading: str, sections: list[dict], intro: list = (), nav: bool = True, css: str = CSS) -> str:
    """The page. `sections`: dicts with key, title and blocks (fragments from this module or text)."""
    return _PAGE.render(title=title, heading=heading, sections=sections, intro=list(intro), nav=nav, css=Markup(css))


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def figure(name: str, title: str, caption: str, png: bytes | Path) -> Markup:
    data = Path(png).read_bytes() if isinstance(png, (str, Path)) else png
    return Markup(_FIGURE.render(name=name, title=title, caption=caption, src=png_data_uri(data)))


def matplotlib_png(fig, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def cell(value, digits: int = 3) -> str:
    """How a table cell reads: numbers to `digits` significant digits, a missing value as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    try:
        import pandas as pd

        if pd.isna(value):
            return "–"
    except (TypeError, ValueError):
        pass
    return str(value)


def table(frame, max_rows: int = 40, digits: int = 3, cls: str | None = None) -> Markup:
    """A DataFrame as an HTML table (escaped); '(empty)' for no rows."""
    if frame is None or len(frame) == 0:
        return tag("p", "(empty)", "note")
    shown = frame.head(max_rows)
    rows = [[cell(v, digits) for v in r] for r in shown.itertuples(index=False, name=None)]
    more = len(frame) - max_rows if len(frame) > max_rows else 0
    return Markup(_TABLE.render(columns=[str(c) for c in shown.columns], rows=rows, more=more, cls=cls))


def sortable_table(frame, digits: int = 3) -> Markup:
    """Every row of `frame` as a table whose columns sort on a click (inline script; plain without it)."""
    return Markup(table(frame, max_rows=len(frame), digits=digits, cls="sortable") + Markup(_SORT_SCRIPT))


def link(href: str, text: str) -> Markup:
    return render('<a href="{{ href }}">{{ text }}</a>', href=href, text=text)


def facts(rows: dict) -> Markup:
    return Markup(_FACTS.render(rows=[(str(k), str(v)) for k, v in rows.items()]))


def bullet_list(items, cls: str = "findings") -> Markup:
    return Markup(_LIST.render(items=list(items), cls=cls))


def tag(name: str, text, cls: str | None = None) -> Markup:
    return Markup(_TAG.render(tag=name, text=text, cls=cls))


def details(summary: str, text: str) -> Markup:
    return Markup(_DETAILS.render(summary=summary, text=text))
