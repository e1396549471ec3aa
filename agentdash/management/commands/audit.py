"""`manage.py audit verify` and `manage.py audit export`: the operator's view of the log.

python manage.py audit verify    # exit 0 "N events, chain intact"; 1 names the first bad event
python manage.py audit export --format jsonl|csv [--session ID]    # streamed to stdout
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentdash import audit
from agentdash.management.pipes import stop_quietly_when_the_reader_goes
from agentdash.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit log's hash chain, or export the log as JSONL or CSV."
    # Only the database matters here: the log must stay verifiable and exportable even
    # when another part of the project (URLs, templates) fails its system checks.
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="verify|export")
        actions.add_parser(
            "verify",
            help='Check the whole chain: exit 0 with "N events, chain intact", or exit 1 '
            "naming the first bad event.",
        )
        export = actions.add_parser("export", help="Stream the log to stdout.")
        export.add_argument("--format", choices=["jsonl", "csv"], required=True)
        export.add_argument("--session", type=int, metavar="ID", help="only this session")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "verify":
            self._verify(verbosity=options["verbosity"])
        else:
            self._export(options["format"], options["session"])

    def _verify(self, *, verbosity: int) -> None:
        def progress(events_checked: int) -> None:
            self.stderr.write(f"... {events_checked} events checked")

        # The same walk as the history page's background check, here from event 1 and in
        # the foreground; read-only, so that checking never changes what is checked.
        report = audit.verify(progress=progress if verbosity >= 2 else None)
        if not report.ok:
            raise CommandError(
                f"audit chain broken at event {report.first_bad_seq}: {report.problem} "
                f"({report.events_checked} events read)"
            )
        self.stdout.write(f"{report.events_checked} events, chain intact")
        if verbosity >= 1:
            # Diagnostics on stderr keep stdout to the one line that scripts read.
            self.stderr.write(
                f"head: event {report.head_seq}, hash {report.head_hash}; "
                f"{report.seconds:.3f} s, {report.events_per_second:,.0f} events/s"
            )

    def _export(self, fmt: audit.ExportFormat, session_id: int | None) -> None:
        events = AuditEvent.objects.all()
        if session_id is not None:
            events = events.filter(session_id=session_id)
        with stop_quietly_when_the_reader_goes():
            for line in audit.export_lines(events, fmt):
                self.stdout.write(line, ending="")
