"""The few Markdown pieces every reference page needs: escaped prose, code spans, anchors."""

from __future__ import annotations

import html
import re

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _escape(prose: str) -> str:
    # a pipe would end a table cell; tables make it escapable in prose too
    return html.escape(prose, quote=False).replace("*", r"\*").replace("|", r"\|")


def text(value: str) -> str:
    """Prose from docstrings and help texts on one line, HTML-escaped (a ``<path>`` must not become a tag) except
    inside code spans, which Markdown shows verbatim."""
    flat = " ".join(value.split())
    pieces, last = [], 0
    for span in _CODE_SPAN.finditer(flat):
        pieces += [_escape(flat[last:span.start()]), span.group(0)]
        last = span.end()
    return "".join([*pieces, _escape(flat[last:])])


def code(value: str) -> str:
    """A code span (a table leaves the pipes inside one alone)."""
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def anchor(anchor_id: str) -> str:
    """An empty element a link can target (mkdocs' validation sees its id in raw HTML)."""
    return f'<a id="{anchor_id}"></a>'


def slug(value: str) -> str:
    """Lower case without pattern braces, runs of anything but letters, digits and ``_`` as one ``-``:
    ``kwx.kind`` -> kwx-kind, ``mean_{window_metric}`` -> mean_window_metric."""
    return re.sub(r"[^a-z0-9_]+", "-", re.sub(r"[{}]", "", value.lower())).strip("-")


def paragraphs(value: str) -> str:
    """A docstring's paragraphs, each re-flowed onto one escaped line."""
    return "\n\n".join(text(p) for p in re.split(r"\n\s*\n", value.strip()) if p.strip())
