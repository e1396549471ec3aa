"""Debian's Chromium as the browser tests and the screenshots launch it."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keeps Chromium from reaching for the closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
# Every wait is bounded: a live update takes milliseconds, a step well under a second.
TIMEOUT_MS = 10_000


def launch(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        # Never a skip: `make test` installs it, so a missing browser is a broken setup.
        raise RuntimeError(f"{CHROMIUM} is missing: `bash scripts/system-deps.sh` installs it")
    expect.set_options(timeout=TIMEOUT_MS)
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


def wait_until_live(page: Page) -> None:
    """The page's socket is open and its snapshot is in: what happens now arrives live."""
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
