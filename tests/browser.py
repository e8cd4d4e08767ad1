"""Headless Chromium for the web view and report tests: Debian's ``chromium`` driven by
Playwright (its own browser download is not used). Skips with an install hint when either
is missing (``make browser`` installs chromium when run as root)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    path = CHROMIUM if shutil.which(CHROMIUM) else shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not installed: `sudo make browser` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def chart_sizes(page: Any, selector: str) -> list[tuple[float, float]]:
    """Width and height of the canvas of each chart matching ``selector``."""
    sizes = page.eval_on_selector_all(
        f"{selector} canvas",
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; })",
    )
    return [(float(w), float(h)) for w, h in sizes]


def feature_order(page: Any, model: str) -> list[tuple[str, bool]]:
    """The feature cards of ``model`` in page order: (name, shown as drifted)."""
    order = page.eval_on_selector_all(
        f'article[data-model="{model}"] section.feature',
        "els => els.map(e => [e.dataset.feature, e.dataset.drifted === 'true'])",
    )
    return [(str(name), bool(drifted)) for name, drifted in order]
