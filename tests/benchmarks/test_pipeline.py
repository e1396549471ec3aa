"""The pipeline benchmark's floor: how many transactions a captured cycle committed."""

from __future__ import annotations

from benchmarks.pipeline import _transactions


def test_a_write_outside_begin_commits_on_its_own_and_reads_commit_nothing():
    statements = [
        "BEGIN IMMEDIATE",
        "SELECT 1 FROM t",
        "INSERT INTO t VALUES (1)",
        "COMMIT",
        "UPDATE t SET a = 2",  # SQLite's autocommit: a transaction of its own
        "SELECT a FROM t",
        "begin immediate",
        "commit",
        "INSERT INTO t VALUES (3)",
    ]

    assert _transactions(statements) == 4
