"""The load benchmark's verdicts: errors, flat memory, and no target where none is given."""

from __future__ import annotations

from benchmarks import load


def probe_data(**changes):
    data = {
        "seconds": 300.0,
        "sockets": 50,
        "sessions_started": 400,
        "sessions_completed": 300,
        "approvals": 800,
        "tool_calls": 1200,
        "model_turns": 1600,
        "errors": {"sessions ended other than completed": 0},
        "push_ms": [float(n) for n in range(1, 101)],
        "rss_mb": [200.0, 205.0, 210.0],
        "rss_first_mb": 200.0,
        "rss_last_mb": 210.0,
        "rss_of": "the server process",
    }
    return data | changes


def by_name(data):
    return {figure.name: figure for figure in load._figures(data)}


def test_a_quiet_run_meets_its_targets_and_reports_the_rest_without_one():
    figures = by_name(probe_data())

    assert figures["load, embedded: errors"].value == 0
    assert figures["load, embedded: errors"].passed is True
    rss = figures["load, embedded: server RSS growth, second minute to last"]
    assert rss.value == 10
    assert rss.passed is True
    assert rss.note.startswith("200 MB to 210 MB (+5.0 %), peak 210 MB")
    assert figures["load, embedded: approval push p50"].value == 50.5
    assert figures["load, embedded: approval push p50"].target == ""
    assert figures["load, embedded: approval push p99"].passed is None
    assert figures["load, embedded: end-to-end tool calls"].value == 4.0


def test_any_error_or_growing_memory_misses_the_target():
    figures = by_name(
        probe_data(
            errors={"websockets closed by the server": 2, "sessions ended other than completed": 1},
            rss_first_mb=200.0,
            rss_last_mb=260.0,
        )
    )

    errors = figures["load, embedded: errors"]
    assert errors.value == 3
    assert errors.passed is False
    assert errors.note.startswith("2 websockets closed by the server, 1 sessions ended")
    rss = figures["load, embedded: server RSS growth, second minute to last"]
    assert rss.passed is False  # 60 MB, 30 %
    assert "(+30.0 %)" in rss.note


def test_relative_growth_alone_misses_the_target():
    figures = by_name(probe_data(rss_first_mb=100.0, rss_last_mb=115.0))

    rss = figures["load, embedded: server RSS growth, second minute to last"]
    assert rss.passed is False  # 15 %
