"""`manage.py agent start|show|decide|worker`: drive agent sessions from a shell.

These commands are a stable contract (scripts and tests outside the project use them):
see DESIGN.md, "Operator commands".
"""

from __future__ import annotations

import json
import signal
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from agentdash import toolbox
from agentdash.approvals import AlreadyDecided, InvalidEdit, decide
from agentdash.management.pipes import stop_quietly_when_the_reader_goes
from agentdash.models import AgentSession, ToolCall
from agentdash.providers import available_providers, load_script
from agentdash.sessions import start_session
from agentdash.web.forms import StartSessionForm
from agentdash.worker import StepWorker


class Command(BaseCommand):
    help = "Start, inspect and decide agent sessions; run a worker."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        start = sub.add_parser("start", help="Start a session; prints its id.")
        start.add_argument("--goal", required=True)
        start.add_argument(
            "--provider", default="scripted", choices=[p.name for p in available_providers()]
        )
        start.add_argument("--model", default="")
        start.add_argument("--script", type=Path, help="Scripted provider turns (JSON).")
        start.add_argument("--tools", default="", help="Comma-separated tool names.")
        start.add_argument("--max-steps", type=int)
        start.add_argument("--max-tokens", type=int, help="Input and output tokens in all.")
        start.add_argument("--max-cost", help="USD")
        start.add_argument("--user", help="The session's owner.")

        show = sub.add_parser("show", help="A session's status, totals and tool calls.")
        show.add_argument("session", type=int)
        show.add_argument("--json", action="store_true")

        dec = sub.add_parser("decide", help="Approve or reject a pending tool call.")
        dec.add_argument("call", type=int)
        verdict = dec.add_mutually_exclusive_group(required=True)
        verdict.add_argument("--approve", action="store_true")
        verdict.add_argument("--reject", action="store_true")
        dec.add_argument("--reason", default="")
        dec.add_argument("--arguments", help="Edited arguments (JSON object) to run instead.")
        dec.add_argument("--user", required=True)

        sub.add_parser("worker", help="Run session steps until stopped (for scale-out).")

    def handle(self, *args: Any, **options: Any) -> None:
        with stop_quietly_when_the_reader_goes():  # `agent show 7 | head`
            getattr(self, f"_{options['action']}")(options)

    # -- start ------------------------------------------------------------------------

    def _start(self, options: dict[str, Any]) -> None:
        script = None
        if options["script"]:
            try:
                script = load_script(options["script"])
            except (OSError, ValueError) as error:
                raise CommandError(f"--script: {error}") from None
        goal = options["goal"]
        if goal.strip():  # a blank one start_session refuses itself, saying why
            goal = _cleaned("goal", goal)
        max_cost = _cleaned("max_cost", options["max_cost"])
        max_steps = _cleaned("max_steps", options["max_steps"])
        max_tokens = _cleaned("max_tokens", options["max_tokens"])
        tools = [name.strip() for name in options["tools"].split(",") if name.strip()]
        try:
            session = start_session(
                goal=goal,
                owner=self._user(options["user"]) if options["user"] else None,
                provider=options["provider"],
                model=options["model"],
                script=script,
                enabled_tools=tools,
                max_steps=max_steps,
                max_tokens=max_tokens,
                max_cost=max_cost,
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(str(session.pk))

    # -- show -------------------------------------------------------------------------

    def _show(self, options: dict[str, Any]) -> None:
        try:
            session = AgentSession.objects.get(pk=options["session"])
        except AgentSession.DoesNotExist:
            raise CommandError(f"No session {options['session']}.") from None
        calls = list(session.tool_calls.select_related("message").prefetch_related("results"))
        if options["json"]:
            self.stdout.write(json.dumps(_session_summary(session, calls), indent=2))
            return
        self.stdout.write(f"Session {session.pk}: {session.status}")
        if session.status_reason:
            self.stdout.write(f"  {session.status_reason}")
        self.stdout.write(f"  goal: {session.goal}")
        self.stdout.write(
            f"  {session.provider}/{session.model} · steps {session.steps}/{session.max_steps}"
            f" · tokens {session.input_tokens} in, {session.output_tokens} out"
            f" · cost ${session.cost:.6f}"
        )
        for call in calls:
            result = call.latest_result
            outcome = f" → {result.status}" if result else ""
            arguments = call.arguments if call.arguments is not None else call.proposed_arguments
            self.stdout.write(
                f"  call {call.pk} [{call.state}] {call.tool_name}"
                f" {json.dumps(arguments)[:200]}{outcome}"
            )

    # -- decide -----------------------------------------------------------------------

    def _decide(self, options: dict[str, Any]) -> None:
        edited = None
        if options["arguments"] is not None:
            try:
                edited = json.loads(options["arguments"])
            except json.JSONDecodeError as error:
                raise CommandError(f"--arguments is not valid JSON: {error}") from None
            if not isinstance(edited, dict):
                raise CommandError("--arguments must be a JSON object")
            if options["reject"]:
                raise CommandError("--arguments goes with --approve")
        try:
            decision = decide(
                options["call"],
                user=self._user(options["user"]),
                approve=options["approve"],
                reason=options["reason"],
                edited_arguments=edited,
            )
        except ToolCall.DoesNotExist:
            raise CommandError(f"No tool call {options['call']}.") from None
        except (AlreadyDecided, PermissionDenied, InvalidEdit) as error:
            raise CommandError(str(error)) from None
        verb = "approved" if decision.approved else "rejected"
        call = decision.tool_call
        if call.state == ToolCall.State.PENDING_APPROVAL:  # a call that needs two approvals
            given, needed = call.approvals_given(), call.approvals_required
            verb = f"approved ({given} of {needed} approvals; it waits for the rest)"
        self.stdout.write(f"Call {options['call']} {verb} by {decision.actor}.")

    # -- worker -----------------------------------------------------------------------

    def _worker(self, options: dict[str, Any]) -> None:
        toolbox.announce_sandbox()
        step_worker = StepWorker()

        def stop(signum: int, frame: object) -> None:
            self.stderr.write("Stopping after the current step...")
            step_worker.shutdown()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        step_worker.run()

    def _user(self, username: str) -> Any:
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None


def _session_summary(session: AgentSession, calls: list[ToolCall]) -> dict[str, Any]:
    return {
        "id": session.pk,
        "status": session.status,
        "status_reason": session.status_reason,
        "goal": session.goal,
        "provider": session.provider,
        "model": session.model,
        "steps": session.steps,
        "max_steps": session.max_steps,
        "input_tokens": session.input_tokens,
        "output_tokens": session.output_tokens,
        "cost": str(session.cost),
        "owner": session.owner.get_username() if session.owner else None,
        "created_at": session.created_at.isoformat(),
        "tool_calls": [
            {
                "id": call.pk,
                "call_id": call.call_id,
                "tool": call.tool_name,
                "state": call.state,
                "arguments": call.arguments,
                "proposed_arguments": call.proposed_arguments,
                "approval_reason": call.approval_reason,
                "result": (
                    {"status": r.status, "observation": r.observation, "error": r.error}
                    if (r := call.latest_result)
                    else None
                ),
            }
            for call in calls
        ],
    }


def _cleaned(name: str, value: object) -> Any:
    """An option checked as the start page checks its field (a goal no longer than it
    takes, a finite, non-negative amount that fits the column, steps and tokens within
    the allowed range)."""
    if value is None:
        return None
    try:
        return StartSessionForm.base_fields[name].clean(value)
    except ValidationError as error:
        option = "--" + name.replace("_", "-")
        raise CommandError(f"{option}: {' '.join(error.messages)}") from None
