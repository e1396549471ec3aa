"""The benchmark harness: figures kept with their machine and commit, newest per module."""

from __future__ import annotations

import json

import pytest

from benchmarks import harness
from benchmarks.harness import Figure

FACTS = {
    "commit": "abc1234",
    "dirty": False,
    "python": "3.13.0",
    "cpu": "AMD EPYC",
    "cores": 2,
    "platform": "Linux",
}


def _facts(timestamp: str, commit: str = "abc1234") -> dict:
    return {**FACTS, "timestamp": timestamp, "commit": commit}


def test_a_run_is_kept_with_its_machine_and_commit(tmp_path):
    figures = {"executor": [Figure("overhead", 5.06, "µs", "< 8 µs", True, "median")]}

    record = harness.write(tmp_path, _facts("2026-11-25T14:50:54+00:00"), figures)

    assert record.name == "2026-11-25T145054Z-abc1234.json"
    data = json.loads(record.read_text())
    assert data["cpu"] == "AMD EPYC"
    assert data["cores"] == 2
    assert data["modules"]["executor"][0] == {
        "name": "overhead",
        "value": 5.06,
        "unit": "µs",
        "target": "< 8 µs",
        "passed": True,
        "note": "median",
    }


def test_latest_shows_the_newest_figures_of_every_module(tmp_path):
    old = {"executor": [Figure("overhead", 9.0, "µs")], "pipeline": [Figure("pause", 2, "ms")]}
    harness.write(tmp_path, _facts("2026-11-25T10:00:00+00:00", "old0000"), old)
    harness.write(
        tmp_path,
        _facts("2026-11-25T11:00:00+00:00", "new1111"),
        {"executor": [Figure("overhead", 5.0, "µs", "< 8 µs", passed=False)]},
    )

    page = (tmp_path / "latest.md").read_text()

    executor = page[page.index("## executor") : page.index("## pipeline")]
    assert "commit new1111" in executor
    assert "| overhead | 5 | µs | < 8 µs | NO |  |" in executor
    assert "commit old0000" in page[page.index("## pipeline") :]


def test_the_printed_table_lines_up():
    rows = [Figure("a", 1234567.8, "calls/s"), Figure("longer name", None, "", note="why")]

    lines = harness.table(rows).splitlines()

    assert lines[1].split() == ["a", "1,234,568", "calls/s"]
    assert lines[2].split() == ["longer", "name", "—", "why"]
    assert lines[1].index("1,234,568") == lines[0].index("value")


def test_modules_are_discovered_and_unknown_names_refused(capsys):
    assert {"executor", "pipeline"} <= set(harness.discover())
    assert "harness" not in harness.discover()

    with pytest.raises(SystemExit):
        harness.main(["nonexistent"])
    assert "no benchmark named nonexistent" in capsys.readouterr().err


def test_percentile():
    assert harness.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert harness.percentile([3.0], 50) == 3.0


def test_one_table_holds_every_figure_with_a_target_from_each_modules_newest_run(tmp_path):
    harness.write(
        tmp_path,
        _facts("2026-11-25T10:00:00+00:00", "old0000"),
        {
            "executor": [Figure("overhead", 9.0, "µs", "< 8 µs", passed=False)],
            "live": [
                Figure("push p99", 68.5, "ms", "< 150", passed=True),
                Figure("post", 51, "ms"),
            ],
            "sandbox": [Figure("sandbox crashed", None, "", note="why")],
        },
    )
    harness.write(
        tmp_path,
        {**_facts("2026-11-25T11:30:00+00:00", "new1111"), "dirty": True, "load_average": 9.97},
        {"executor": [Figure("overhead", 5.0, "µs", "< 8 µs", passed=True)]},
    )

    table = harness.targets_table(tmp_path)

    assert table.splitlines()[2:5] == [
        "| overhead | 5 | µs | < 8 µs | yes | executor | 2026-11-25 11:30, load 10.0 "
        "| new1111 (dirty) |",
        "| push p99 | 68.5 | ms | < 150 | yes | live | 2026-11-25 10:00 | old0000 |",
        "| sandbox crashed | — |  |  |  | sandbox | 2026-11-25 10:00 | old0000 |",
    ]
    assert "| post |" not in table  # no target, not in this table
    assert table.endswith("2 of 2 targets met; 1 figure(s) not measured.")
    page = (tmp_path / "latest.md").read_text()
    assert page.index(table) < page.index("## executor")


def test_the_readme_shows_the_table_between_its_markers_and_only_there(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Project\n\nintro\n\n{harness.README_START}\nold table\n{harness.README_END}\n\nrest\n"
    )
    results = tmp_path / "results"

    harness.write(
        results,
        _facts("2026-11-25T10:00:00+00:00"),
        {"live": [Figure("push p99", 68.5, "ms", "< 150", passed=True)]},
        readme=readme,
    )

    text = readme.read_text()
    assert text.startswith("# Project\n\nintro\n\n")
    assert text.endswith(f"{harness.README_END}\n\nrest\n")
    assert "old table" not in text
    assert "| push p99 | 68.5 | ms | < 150 | yes | live |" in text
    harness.write(results, _facts("2026-11-25T10:05:00+00:00"), {}, readme=readme)
    assert readme.read_text() == text  # rewritten, not appended to

    readme.write_text("# No markers\n")
    assert harness.update_readme(readme, "table") is False
    assert readme.read_text() == "# No markers\n"
