"""The web view at ``/`` and the replay report: one page template, one script, one style.

The service serves the page with its assets under ``/assets/``; the script then reads the
JSON API. A replay report is the same page with the assets and the data inlined, one file
that opens without a network. Charts are drawn by uPlot (npm package ``uplot``), shipped
in ``consumers/web`` with its MIT licence, its version in the file's first line: nothing
is fetched from elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["ASSETS", "asset", "chart_library", "page", "report"]

#: the files served under ``/assets/``, with their content types, in page order
ASSETS: Mapping[str, str] = {
    "uPlot.min.css": "text/css; charset=utf-8",
    "view.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "view.js": "text/javascript; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
_STYLES = ("uPlot.min.css", "view.css")
_SCRIPTS = ("uPlot.iife.min.js", "view.js")


@cache
def asset(name: str) -> bytes:
    """A file of ``consumers/web`` (only those of :data:`ASSETS` and the template)."""
    if name not in ASSETS and name != "index.html":
        raise KeyError(name)
    return (resources.files("consumers") / "web" / name).read_bytes()


def chart_library() -> str:
    """The charting library's name and version, as its file's first line states them.

    >>> chart_library()
    'uPlot v1.6.32'
    """
    head = asset("uPlot.iife.min.js")[:200].decode()
    version = head.split("(", 1)[1].split(")", 1)[0]
    return f"uPlot {version}"


def _fill(styles: str, scripts: str, data: str = "") -> str:
    template = asset("index.html").decode()
    return (
        template.replace("<!--styles-->", styles)
        .replace("<!--scripts-->", scripts)
        .replace("<!--data-->", data)
    )


@cache
def page() -> bytes:
    """The live page: the template linking the assets (relative links, so that it also
    works behind a path prefix)."""
    styles = "\n".join(f'<link rel="stylesheet" href="assets/{n}">' for n in _STYLES)
    scripts = "\n".join(f'<script src="assets/{n}"></script>' for n in _SCRIPTS)
    return _fill(styles, scripts).encode()


def _inline(text: str) -> str:
    """Text safe inside a ``<script>`` or ``<style>`` element."""
    return text.replace("</", "<\\/")


def report(data: Mapping[str, Any]) -> str:
    """The self-contained page of ``data`` (JSON values only; ``mode`` is "report")."""
    styles = "\n".join(f"<style>\n{asset(n).decode()}\n</style>" for n in _STYLES)
    scripts = "\n".join(f"<script>\n{_inline(asset(n).decode())}\n</script>" for n in _SCRIPTS)
    # "<" only ever appears inside JSON strings, where \u003c means the same; escaping it
    # keeps a value such as "<!--<script" from changing how the page is parsed
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    embedded = f'<script id="driftline-data" type="application/json">{payload}</script>'
    licence = asset("uPlot.LICENSE").decode().replace("--", "- -")
    note = f"<!-- charts: {chart_library()}, under this licence:\n{licence}-->"
    return _fill(styles, scripts, note + "\n" + embedded)
