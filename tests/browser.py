"""A real headless Chromium (Debian's package) driven by Playwright, offline."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path():
    return shutil.which("chromium")


@contextmanager
def open_page(url: str, *, width: int = 1400, height: int = 1000, allow=("file://",), wait_for=".sankey-node"):
    """Open ``url`` with the network cut off but for URLs starting with one of ``allow`` (file://
    by default; a test server's ``http://127.0.0.1:PORT/``); wait for ``wait_for`` (None: not);
    yield (page, errors, blocked)."""
    from playwright.sync_api import sync_playwright

    errors, blocked = [], []
    with tempfile.TemporaryDirectory(prefix="fc-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            def route(r):
                if r.request.url.startswith(tuple(allow)):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            # console errors, and plotly.js's own warnings ("WARN: Invalid color specifier: ..."):
            # an attribute it could not use, drawn otherwise than the page asked
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                    if m.type == "error" or (m.type == "warning" and m.text.startswith("WARN:")) else None)
            page.goto(url)
            if wait_for:
                page.wait_for_selector(wait_for, timeout=30_000)
            yield page, errors, blocked
        finally:
            ctx.close()
