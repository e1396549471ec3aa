"""`manage.py agent start|show|decide|worker`: the operator commands, a stable contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agentdash.models import AgentSession, ToolCall
from agentdash.sessions import start_session
from agentdash.states import CallState, SessionStatus
from tests.subprocesses import ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def agent(*args: str) -> str:
    out = StringIO()
    call_command("agent", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def write_script(tmp_path) -> Path:
    path = tmp_path / "turns.json"
    path.write_text(
        json.dumps(
            [
                [
                    {"type": "text", "text": "Writing the note."},
                    {
                        "type": "tool_use",
                        "id": "w1",
                        "name": "write_file",
                        "input": {"path": "note.txt", "content": "from the script"},
                    },
                ],
                [{"type": "text", "text": "Done."}],
            ]
        )
    )
    return path


def test_start_prints_the_new_sessions_id(write_script, operator):
    output = agent(
        "start",
        "--goal",
        "Write a note",
        "--script",
        str(write_script),
        "--tools",
        "write_file,read_file",
        "--max-steps",
        "5",
        "--max-tokens",
        "20000",
        "--max-cost",
        "0.50",
        "--user",
        "olivia",
    )
    session = AgentSession.objects.get(pk=int(output.strip()))
    assert session.goal == "Write a note"
    assert session.enabled_tools == ["write_file", "read_file"]
    assert (session.max_steps, session.max_tokens) == (5, 20000)
    assert str(session.max_cost) == "0.500000"
    assert session.owner == operator
    assert session.status == SessionStatus.QUEUED


def test_start_refuses_bad_input_with_clear_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[[{"type": "tool_use"}]]')
    with pytest.raises(CommandError, match="--script"):
        agent("start", "--goal", "x", "--script", str(broken))
    for cost in ("lots", "NaN", "Infinity", "1e20", "-1"):
        with pytest.raises(CommandError, match="--max-cost: "):
            agent("start", "--goal", "x", "--max-cost", cost)
    with pytest.raises(CommandError, match=r"--max-steps: .* greater than or equal to 1"):
        agent("start", "--goal", "x", "--max-steps", "0")
    with pytest.raises(CommandError, match=r"--max-tokens: .* greater than or equal to 1"):
        agent("start", "--goal", "x", "--max-tokens", "0")
    with pytest.raises(CommandError, match=r"--goal: .* at most 20000 characters"):
        agent("start", "--goal", "x" * 20_001)
    with pytest.raises(CommandError, match="No user 'nobody'"):
        agent("start", "--goal", "x", "--user", "nobody")
    with pytest.raises(CommandError, match="needs a goal"):
        agent("start", "--goal", "   ")
    assert not AgentSession.objects.exists()


def test_show_and_decide_drive_a_session_to_its_end(write_script, operator, run_queued_steps):
    session_id = agent("start", "--goal", "Write", "--script", str(write_script)).strip()
    run_queued_steps()

    shown = json.loads(agent("show", session_id, "--json"))
    assert shown["status"] == "waiting_approval"
    [call] = shown["tool_calls"]
    assert call["state"] == "pending_approval"
    assert call["arguments"] == {"path": "note.txt", "content": "from the script"}
    assert f"call {call['id']} [pending_approval] write_file" in agent("show", session_id)

    edited = json.dumps({"path": "edited.txt", "content": "edited by olivia"})
    decided = agent(
        "decide", str(call["id"]), "--approve", "--arguments", edited, "--user", "olivia"
    )
    assert decided.strip() == f"Call {call['id']} approved by user:olivia."
    run_queued_steps()

    shown = json.loads(agent("show", session_id, "--json"))
    assert shown["status"] == "completed"
    assert shown["tool_calls"][0]["state"] == "succeeded"
    workspace = AgentSession.objects.get(pk=int(session_id)).workspace
    assert (workspace / "edited.txt").read_text() == "edited by olivia"


def test_decide_explains_what_it_cannot_do(write_script, operator, viewer, run_queued_steps):
    session_id = agent("start", "--goal", "Write", "--script", str(write_script)).strip()
    run_queued_steps()
    call = ToolCall.objects.get(session_id=int(session_id))

    with pytest.raises(CommandError, match="may not approve"):
        agent("decide", str(call.pk), "--approve", "--user", "victor")
    with pytest.raises(CommandError, match="not valid JSON"):
        agent("decide", str(call.pk), "--approve", "--arguments", "{oops", "--user", "olivia")
    with pytest.raises(CommandError, match="path"):
        agent(
            "decide", str(call.pk), "--approve", "--arguments", '{"content": 1}', "--user", "olivia"
        )
    with pytest.raises(CommandError, match="No tool call 999"):
        agent("decide", "999", "--reject", "--user", "olivia")

    agent("decide", str(call.pk), "--reject", "--reason", "not now", "--user", "olivia")
    with pytest.raises(CommandError, match="already rejected by user:olivia"):
        agent("decide", str(call.pk), "--approve", "--user", "olivia")
    assert ToolCall.objects.get(pk=call.pk).state == CallState.REJECTED


def test_show_names_a_missing_session():
    with pytest.raises(CommandError, match="No session 42"):
        agent("show", "42")


@pytest.mark.slow
def test_the_worker_command_runs_steps_and_stops_cleanly_on_sigterm(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AGENTDASH_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    started = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "agent",
            "start",
            "--goal",
            "List the files",
            "--tools",
            "list_dir",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    session_id = int(started.stdout.strip())
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "agent", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if AgentSession.objects.get(pk=session_id).is_finished:
                break
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    session = AgentSession.objects.get(pk=session_id)
    # The demo's write needs a tool this session was not given: the model is told, and
    # the session still runs to its end.
    assert session.is_finished, output
    assert worker.returncode == 0, output
    # What the sandbox enforces, said as the worker starts.
    assert "process sandbox protections: backend: process; network:" in output
    assert "process sandbox does NOT enforce: workspace_total_size" in output


def test_show_stops_quietly_when_the_reader_goes_away():
    session = start_session(goal="Be shown", script=[[]])
    with subprocess.Popen(
        [sys.executable, "manage.py", "agent", "show", str(session.pk)],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": database_url()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:  # like `agent show 7 | head -0`: gone before anything is read
        child.stdout.close()
        stderr = child.stderr.read()

    assert child.returncode == 0
    assert stderr == ""
