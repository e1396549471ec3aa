"""Separate worker processes wake when work arrives, not a polling interval later."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from agentdash.models import AgentSession
from agentdash.sessions import start_session
from agentdash.states import SessionStatus
from tests.subprocesses import ROOT, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]


def test_a_worker_in_another_process_is_woken_by_a_new_step(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AGENTDASH_WORKSPACES_DIR": str(tmp_path),
        # Only a notification can wake this worker within the test's time.
        "AGENTDASH_WORKER_POLL_SECONDS": "600",
        "AGENTDASH_SWEEP_SECONDS": "600",
    }
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "agent", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Once it has started, it sweeps, finds nothing, and sleeps on its 600 s poll.
        for _ in range(50):
            if " started" in worker.stdout.readline():
                break
        time.sleep(1)
        session = start_session(goal="Say hello", script=[[{"type": "text", "text": "Hello."}]])
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline and not AgentSession.objects.get(pk=session.pk).is_finished
        ):
            time.sleep(0.05)
        assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.COMPLETED
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    assert "listening for new steps failed" not in output, output
