"""Run benchmark modules, print one table, and keep the figures with the machine and commit.

A benchmark module is any module of this package (other than this one) with a
`run() -> list[Figure]`. Results go to benchmarks/results/<timestamp>-<commit>.json, and
latest.md shows the newest figures of every module, beginning with one table of every
figure that has a target; the README shows that table too, between its markers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import pkgutil
import platform
import statistics
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
RESULTS = PACKAGE / "results"
_NOT_BENCHMARKS = {"harness", "__main__"}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure. `value` is None when it could not be measured (say why in note)."""

    name: str
    value: float | None
    unit: str
    target: str = ""  # e.g. "< 8 µs"; empty when there is nothing to meet
    passed: bool | None = None  # None when there is no target
    note: str = ""


ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The README's copy of the table of targets lives between these lines.
README_START = "<!-- figures:start -->"
README_END = "<!-- figures:end -->"
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


def probe_in_child(
    module: str,
    database: str,
    *,
    bench_db: str = "agentdash_bench",
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Run `python -m <module> --probe <database>` on a fresh database (a temporary var
    dir for SQLite, `bench_db` re-created for PostgreSQL) and return the JSON it prints
    last. Django is configured once per process, so each database gets a child.

    "sqlite" is the embedded default: no DATABASE_URL and no REDIS_URL reach the child
    unless `env` gives them."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentdash-bench-") as var_dir:
        child_env = {
            **os.environ,
            "AGENTDASH_VAR_DIR": var_dir,
            "AGENTDASH_LOG": "WARNING",
            "DJANGO_SETTINGS_MODULE": "agentdash.settings",
            "PYTHONUNBUFFERED": "1",
        }
        if database == "postgres":
            _recreate_postgres_database(bench_db)
            child_env["DATABASE_URL"] = f"{POSTGRES_SERVER}/{bench_db}"
        else:
            child_env.pop("DATABASE_URL", None)
            child_env.pop("REDIS_URL", None)
        child_env |= env or {}
        done = subprocess.run(
            [sys.executable, "-m", module, "--probe", database],
            cwd=ROOT,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the {database} probe failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _recreate_postgres_database(name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name}")
            db.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as error:
        raise RuntimeError(f"no PostgreSQL at {POSTGRES_SERVER}: {error}") from None


def percentile(values: Sequence[float], percent: float) -> float:
    """The `percent`th percentile of values (inclusive method, as numpy's default)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(percent) - 1]


def discover() -> list[str]:
    return sorted(
        module.name
        for module in pkgutil.iter_modules([str(PACKAGE)])
        if module.name not in _NOT_BENCHMARKS and not module.name.startswith("_")
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on and at which commit."""
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        # Figures from a tree with uncommitted changes may not be the commit's.
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        # Other work on the machine slows every figure: the 1-minute load average as the
        # run began says how much there was.
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(available)} (all)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where figures are kept")
    options = parser.parse_args(argv)
    if unknown := sorted(set(options.modules) - set(available)):
        parser.error(f"no benchmark named {', '.join(unknown)}; there are {', '.join(available)}")

    facts = machine()
    print(
        f"commit {facts['commit']}{' (dirty)' if facts['dirty'] else ''} · Python "
        f"{facts['python']} · {facts['cpu']} · {facts['cores']} cores",
        flush=True,
    )
    figures: dict[str, list[Figure]] = {}
    for name in options.modules or available:
        print(f"running {name} ...", flush=True)
        try:
            figures[name] = importlib.import_module(f"benchmarks.{name}").run()
        except Exception as error:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            figures[name] = [Figure(f"{name} crashed", None, "", note=repr(error))]
    for name, rows in figures.items():
        print(f"\n{name}\n{table(rows)}")

    # Only the project's own results belong in its README (not a --results elsewhere).
    readme = README if options.results.resolve() == RESULTS else None
    record = write(options.results, facts, figures, readme=readme)
    print(f"\nwritten to {record} and {options.results / 'latest.md'}")
    if readme is not None:
        print(f"the table of targets is in {readme}")
    failed = any(f.passed is False or f.value is None for rows in figures.values() for f in rows)
    return 1 if failed else 0


def write(
    directory: Path,
    facts: dict[str, Any],
    figures: dict[str, list[Figure]],
    *,
    readme: Path | None = None,
) -> Path:
    """Keep the run in `directory`, rewrite its latest.md and, when given, the table of
    targets in `readme` (between README_START and README_END)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = facts["timestamp"].replace(":", "").replace("+0000", "Z")
    record = directory / f"{stamp}-{facts['commit']}.json"
    data = {**facts, "modules": {k: [dataclasses.asdict(f) for f in v] for k, v in figures.items()}}
    record.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    (directory / "latest.md").write_text(latest(directory))
    if readme is not None:
        update_readme(readme, targets_table(directory))
    return record


def _newest_runs(directory: Path) -> dict[str, dict[str, Any]]:
    """Per module, the newest run in `directory` that measured it."""
    newest: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):  # names start with the time: oldest first
        data = json.loads(path.read_text())
        for module in data["modules"]:
            newest[module] = data
    return dict(sorted(newest.items()))


def targets_table(directory: Path) -> str:
    """One Markdown table of every figure with a target, from each module's newest run:
    value, target, whether it was met, and the module, date and commit it came from.
    Figures that could not be measured are in it too, so that a benchmark that failed
    does not take its targets out of sight (its note says why, in latest.md)."""
    header = ("figure", "value", "unit", "target", "met", "module", "measured", "commit")
    rows = []
    for module, data in _newest_runs(directory).items():
        commit = data["commit"] + (" (dirty)" if data["dirty"] else "")
        measured = data["timestamp"][:16].replace("T", " ") + _load_of(data)
        for row in data["modules"][module]:
            figure = Figure(**row)
            if figure.target or figure.value is None:
                cells = (figure.name, _number(figure.value), figure.unit, figure.target)
                rows.append((*cells, _verdict(figure.passed), module, measured, commit))
    if not rows:
        return "No figure with a target has been measured yet: run `make bench`."
    targets = [row for row in rows if row[3]]
    met = sum(row[4] == "yes" for row in targets)
    unmeasured = sum(row[1] == "—" for row in rows)
    summary = f"{met} of {len(targets)} targets met; {unmeasured} figure(s) not measured."
    lines = [f"| {' | '.join(row)} |" for row in [header, *rows]]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join([*lines, "", summary])


def update_readme(readme: Path, table_text: str) -> bool:
    """Put `table_text` between the README's markers. False (and the README untouched)
    when it has no such pair of markers."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        print(f"{readme} has no {README_START} ... {README_END}: not updated", file=sys.stderr)
        return False
    before, after = text[: start + len(README_START)], text[end:]
    readme.write_text(f"{before}\n{table_text}\n{after}")
    return True


def latest(directory: Path) -> str:
    """A Markdown page: every figure with a target in one table, then the newest
    figures of every module found in `directory`."""
    newest = _newest_runs(directory)
    lines = ["# Latest benchmark figures", "", "Written by `make bench`; one run per module."]
    lines += ["", "## Every figure with a target (or not measured)", "", targets_table(directory)]
    for module, data in newest.items():
        rows = [Figure(**row) for row in data["modules"][module]]
        dirty = " (uncommitted changes)" if data["dirty"] else ""
        lines += [
            "",
            f"## {module}",
            "",
            f"{data['timestamp']}, commit {data['commit']}{dirty}, Python {data['python']}, "
            f"{data['cpu']}, {data['cores']} cores{_load_of(data)}",
            "",
            table(rows, markdown=True),
        ]
    return "\n".join(lines) + "\n"


def table(rows: Sequence[Figure], *, markdown: bool = False) -> str:
    header = ("figure", "value", "unit", "target", "met", "note")
    cells = [header] + [
        (f.name, _number(f.value), f.unit, f.target, _verdict(f.passed), f.note) for f in rows
    ]
    if markdown:
        lines = [f"| {' | '.join(row)} |" for row in cells]
        lines.insert(1, "|" + "---|" * len(header))
        return "\n".join(lines)
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _load_of(data: dict[str, Any]) -> str:
    """ ", load 1.5" when the run recorded the machine's load average (older runs did not)."""
    load = data.get("load_average")
    return "" if load is None else f", load {load:.1f}"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _verdict(passed: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[passed]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()
