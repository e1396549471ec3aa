"""The README's screenshots of the dashboard, taken from the real product.

    .venv/bin/python -m tests.e2e.screenshots [--out docs/screenshots]

Runs `manage.py serve` on a fresh var dir (SQLite) holding a small story: a week of
seeded audit history, and live sessions that wait for an operator (a change to a file,
shown as a diff; a Python run; a shell command) beside finished ones. Then it opens each
main page in Debian's Chromium at 1280x800, logged in as an operator, waits until the
page's live connection has its snapshot, and writes one PNG per page.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.browser import TIMEOUT_MS, VIEWPORT, launch, wait_until_live

ROOT = Path(__file__).resolve().parents[2]
SEEDED_EVENTS = 3000
SEEDED_DAYS = 6  # the charts show the last 7 days
STEP_SECONDS = 30  # a bound on the server's worker reaching each state

CHANGELOG_V1 = """\
# Changelog

## 2.3.0
- Faster exports of the audit log
"""
CHANGELOG_V2 = """\
# Changelog

## 2.4.0
- Edit a tool call's arguments before approving it

## 2.3.0
- Faster exports of the audit log (streamed, constant memory)
"""
NIGHTLY_CHECK = """\
import csv, statistics
with open("nightly.csv") as runs:
    minutes = [float(row["minutes"]) for row in csv.DictReader(runs)]
print(f"median {statistics.median(minutes):.1f} min over {len(minutes)} runs")
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentdash-") as var_dir:
        _configure_django(Path(var_dir))
        from tests.e2e.server import serving

        operator, owner = _people()
        with serving(var_dir=Path(var_dir)) as server:
            session_id = _story(operator, owner)
            _photograph(server.url, operator, session_id, options.out)
    print(f"written to {options.out}")


def _configure_django(var_dir: Path) -> None:
    # A database of its own: the screenshots never touch the developer's var/.
    os.environ["AGENTDASH_VAR_DIR"] = str(var_dir)
    os.environ["AGENTDASH_WORKSPACES_DIR"] = str(var_dir / "workspaces")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdash.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("seed_audit", events=SEEDED_EVENTS, days=SEEDED_DAYS, verbosity=0)


def _people() -> tuple[Any, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    users = get_user_model()
    operator = users.objects.create_user("oscar")
    operator.user_permissions.add(Permission.objects.get(codename="decide_toolcall"))
    owner = users.objects.create_user("olivia")
    return users.objects.get(pk=operator.pk), owner


def _story(operator: Any, owner: Any) -> int:
    """Sessions in the states the pages are about; returns the one whose page is shown.

    The changelog's second write is the oldest call waiting, so the queue shows its diff
    first."""
    from agentdash.approvals import decide
    from tests.e2e.scripts import start, text, tool_use

    finished = start(
        owner,
        "Summarise what is in the workspace",
        [text("Let me look around first."), tool_use("list_dir", path=".")],
        [text("The workspace is empty, so there is nothing to summarise yet.")],
    )
    refused = start(
        owner,
        "Store the deploy credentials for later",
        [text("I'll keep them in a file."), tool_use("write_file", path=".env", content="K=1")],
        [text("Understood: I won't write credentials to the workspace.")],
    )
    decide(
        _pending(refused.pk)[0],
        user=operator,
        approve=False,
        reason="Secrets stay in the vault, never in a workspace",
    )
    changelog = start(
        owner,
        "Update the changelog for release 2.4",
        [
            text("I'll start the changelog with what shipped in 2.3."),
            tool_use("write_file", path="CHANGELOG.md", content=CHANGELOG_V1),
        ],
        [
            text("Now the 2.4 entries, and a detail that 2.3's notes missed."),
            tool_use("write_file", path="CHANGELOG.md", content=CHANGELOG_V2),
        ],
        [text("The changelog is ready for 2.4.")],
    )
    decide(_pending(changelog.pk)[0], user=operator, approve=True)
    _pending(changelog.pk, after=1)
    checks = start(
        owner,
        "Find why the nightly job got slower",
        [
            text("I'll compute the median run time from the job's history."),
            tool_use("run_python", code=NIGHTLY_CHECK),
            tool_use("run_shell", command="du -sh build/ && ls -lt build/ | head"),
        ],
    )
    _pending(checks.pk, count=2)
    _finished(finished.pk)
    _finished(refused.pk)
    return checks.pk


def _pending(session_id: int, *, count: int = 1, after: int = 0) -> list[int]:
    """The session's pending calls, once there are `count` of them beyond the first
    `after` calls it ever made (the server's worker gets them there)."""
    from agentdash.models import ToolCall
    from agentdash.states import CallState

    deadline = time.monotonic() + STEP_SECONDS
    while time.monotonic() < deadline:
        calls = ToolCall.objects.filter(session_id=session_id).order_by("pk")[after:]
        pending = [call.pk for call in calls if call.state == CallState.PENDING_APPROVAL]
        if len(pending) >= count:
            return pending
        time.sleep(0.05)
    raise TimeoutError(f"session {session_id} has no {count} pending call(s)")


def _finished(session_id: int) -> None:
    from agentdash.models import AgentSession

    deadline = time.monotonic() + STEP_SECONDS
    while not AgentSession.objects.get(pk=session_id).is_finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session_id} did not finish")
        time.sleep(0.05)


def _photograph(url: str, operator: Any, session_id: int, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.server import session_cookie

    name, value = session_cookie(operator)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(base_url=url, viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": name, "value": value, "url": url}])
        page = context.new_page()

        page.goto("/sessions/new/")
        page.get_by_label("Goal").fill("Find why the nightly job in jobs/nightly.sh is slow")
        page.screenshot(path=out / "start-form.png")

        for shot, path in [
            ("sessions", "/sessions/"),
            ("approvals", "/approvals/"),
            ("session", f"/sessions/{session_id}/"),
        ]:
            page.goto(path)
            wait_until_live(page)
            # The queue selects (and scrolls to) its first card; the picture starts at the top.
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=out / f"{shot}.png")

        page.goto("/history/")
        page.get_by_role("button", name="Verify now").click()
        expect(page.get_by_text("Intact")).to_be_visible()
        page.screenshot(path=out / "history.png")
        page.goto("/history/charts/?range=7d")
        page.screenshot(path=out / "charts.png")
        browser.close()


if __name__ == "__main__":
    main()
