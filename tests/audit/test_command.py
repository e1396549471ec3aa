"""`manage.py audit verify` and `manage.py audit export`, in process and as real processes."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from agentdash import audit, verification
from agentdash.models import AuditEvent

TABLE = AuditEvent._meta.db_table


def run_command(*args: str, verbosity: int = 1) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("audit", *args, verbosity=verbosity, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def delete_event(seq: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq = %s", [seq])


@pytest.mark.django_db
class TestInProcess:
    def test_verify_prints_the_count_and_the_head(self, make_events):
        make_events(3)

        stdout, stderr = run_command("verify")

        assert stdout == "3 events, chain intact\n"
        assert f"head: event 3, hash {AuditEvent.objects.get(seq=3).hash}" in stderr
        assert "events/s" in stderr

    def test_verify_reports_progress_when_verbose(self, make_events, monkeypatch):
        monkeypatch.setattr(audit, "CHUNK_SIZE", 2)
        make_events(4)

        _, stderr = run_command("verify", verbosity=2)

        assert "... 2 events checked" in stderr
        assert "... 4 events checked" in stderr

    @pytest.mark.usefixtures("unguarded")
    def test_verify_names_the_first_bad_event(self, make_events):
        make_events(4)
        delete_event(2)

        with pytest.raises(
            CommandError, match=r"broken at event 3: event 3 \(toolcall\.proposed\)"
        ):
            run_command("verify")

    @pytest.mark.usefixtures("unguarded")
    def test_verify_and_the_history_pages_job_find_the_same_first_bad_event(self, make_events):
        make_events(6)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {TABLE} SET kind = 'forged' WHERE seq = 4")
        verification.request("user:alice", full=True)
        while verification.advance(slice_events=2).startswith("checked up to"):
            pass
        job = verification.state()

        with pytest.raises(CommandError) as raised:
            run_command("verify")

        assert (job.verified_ok, job.first_bad_seq) == (False, 4)
        assert str(raised.value) == (
            f"audit chain broken at event 4: {job.problem} ({job.verified_events} events read)"
        )

    def test_verify_only_reads(self, make_events):
        make_events(2)

        run_command("verify")
        run_command("verify")

        assert AuditEvent.objects.count() == 2  # no record of the check is appended
        assert verification.state().verified_at is None

    def test_export_jsonl_for_one_session(self, make_events):
        make_events(5)

        stdout, _ = run_command("export", "--format", "jsonl", "--session", "2")

        events = [json.loads(line) for line in stdout.splitlines()]
        assert [(event["seq"], event["session_id"]) for event in events] == [(2, 2), (4, 2)]

    def test_export_csv(self, make_events):
        make_events(2)

        stdout, _ = run_command("export", "--format", "csv")

        rows = list(csv.DictReader(io.StringIO(stdout)))
        assert [row["seq"] for row in rows] == ["1", "2"]

    def test_export_needs_a_format(self):
        with pytest.raises(CommandError, match="--format"):
            run_command("export")


def database_url() -> str:
    """A DATABASE_URL that points a child process at this test run's database."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=os.environ | {"DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the child process must see committed events
class TestRealProcess:
    def test_verify_exits_0_on_an_intact_chain(self, make_events):
        make_events(3)

        result = manage("audit", "verify")

        assert (result.returncode, result.stdout) == (0, "3 events, chain intact\n")

    @pytest.mark.usefixtures("unguarded")
    def test_verify_exits_1_naming_the_first_bad_event(self, make_events):
        make_events(3)
        delete_event(2)

        result = manage("audit", "verify")

        assert result.returncode == 1
        assert result.stdout == ""
        assert "audit chain broken at event 3" in result.stderr
        assert "event(s) 2 missing" in result.stderr

    def test_export_streams_to_stdout(self, make_events):
        make_events(4)

        result = manage("audit", "export", "--format", "jsonl", "--session", "1")

        assert result.returncode == 0
        assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 3]

    def test_export_stops_quietly_when_the_reader_goes_away(self, make_events):
        make_events(1000, filler="x" * 2000)  # 2 MB: far more than a pipe holds

        with subprocess.Popen(
            [sys.executable, "manage.py", "audit", "export", "--format", "jsonl"],
            cwd=settings.BASE_DIR,
            env=os.environ | {"DATABASE_URL": database_url()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:  # like `audit export | head -1`
            assert json.loads(child.stdout.readline())["seq"] == 1
            child.stdout.close()
            stderr = child.stderr.read()

        assert child.returncode == 0
        assert stderr == ""
