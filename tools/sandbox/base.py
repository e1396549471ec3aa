"""The sandbox interface every backend implements: what a run may use (`Limits`), what it
did (`SandboxResult`) and the `Sandbox` base class with the parts all backends share
(argument checks, bounded output capture, the wall-clock timeout and the kill on timeout
or cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger("tools.sandbox")

# Linux refuses a single exec argument longer than MAX_ARG_STRLEN (32 pages); the process
# and Docker backends pass the code as one, so every backend holds code to that size.
MAX_CODE_BYTES: Final = 32 * 4096 - 1

# After the code's main process ended, how long its pipes may stay open (a background
# process still writing) before everything left is killed and the output is cut there.
DRAIN_SECONDS: Final = 1.0

# What SandboxResult.limit_hit names.
WALL_TIME: Final = "wall_time"
CPU_TIME: Final = "cpu_time"
MEMORY: Final = "memory"
PROCESSES: Final = "processes"
FILE_SIZE: Final = "file_size"

# Exit statuses follow the shell's convention: a process killed by signal N exits 128 + N.
SIGNAL_EXIT_BASE: Final = 128


def signal_limit(exit_code: int) -> str | None:
    """The limit whose signal ended the main process, if one did."""
    return {
        SIGNAL_EXIT_BASE + signal.SIGXCPU: CPU_TIME,
        SIGNAL_EXIT_BASE + signal.SIGXFSZ: FILE_SIZE,
    }.get(exit_code)


@dataclass(frozen=True)
class Limits:
    """What one run may use. Output is capped per stream; the rest is read and dropped."""

    memory_mb: int = 512
    cpu_seconds: int = 10
    wall_seconds: float = 30
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 256
    max_output_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    """What a run did. `exit_code` is 128 + N when signal N ended the main process (so 137
    after a kill); `limit_hit` names the limit that stopped or hampered it, if one did."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float
    timed_out: bool
    limit_hit: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Command:
    """Exactly one of Python source (`code`) or a program and its arguments (`argv`)."""

    code: str | None = None
    argv: tuple[str, ...] | None = None


class BoundedReader:
    """Keeps the first `limit` bytes of a stream and drops the rest, so a run that prints
    without end costs the server no more than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.kept = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        room = self._limit - len(self.kept)
        if len(chunk) > room:
            self.kept += chunk[:room]
            self.truncated = True
        else:
            self.kept += chunk

    async def read_to_end(self, stream: asyncio.StreamReader) -> None:
        """Read to the end (a process blocked on a full pipe would never finish)."""
        while chunk := await stream.read(64 * 1024):
            self.feed(chunk)

    @classmethod
    def from_chunks(cls, chunks: Iterator[bytes], limit: int) -> BoundedReader:
        """Read chunks until the limit is passed, then stop reading."""
        reader = cls(limit)
        for chunk in chunks:
            reader.feed(chunk)
            if reader.truncated:
                break
        return reader

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


@dataclass
class Finished:
    """How the main process ended, as `Sandbox.supervise` saw it."""

    exit_code: int
    timed_out: bool
    stdout: BoundedReader
    stderr: BoundedReader
    started: float

    def result(self, limit_hit: str | None) -> SandboxResult:
        return SandboxResult(
            exit_code=self.exit_code,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            stdout_truncated=self.stdout.truncated,
            stderr_truncated=self.stderr.truncated,
            duration_ms=(time.monotonic() - self.started) * 1000,
            timed_out=self.timed_out,
            limit_hit=WALL_TIME if self.timed_out else limit_hit,
        )


class Sandbox(ABC):
    """Runs untrusted code or commands in a fresh, bounded, isolated process.

    `run` never raises for the code's own failure: a crash, a limit or a timeout is in the
    result. Cancelling the awaiting task kills everything the run started before the
    CancelledError propagates.
    """

    name: str

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    async def run(
        self,
        *,
        code: str | None = None,
        argv: list[str] | None = None,
        workdir: Path,
        limits: Limits | None = None,
        stdin: None = None,
    ) -> SandboxResult:
        if (code is None) == (argv is None):
            raise ValueError("give exactly one of code or argv")
        if stdin is not None:
            raise ValueError("a sandboxed run's stdin is always closed")
        if code is not None and len(code.encode()) > MAX_CODE_BYTES:
            raise ValueError(f"code is longer than {MAX_CODE_BYTES} bytes")
        if argv is not None and not argv:
            raise ValueError("argv is empty")
        workdir = Path(workdir)
        if not workdir.is_dir():
            raise ValueError(f"workdir {workdir} is not a directory")
        command = Command(code=code, argv=tuple(argv) if argv is not None else None)
        return await self._run(command, workdir.resolve(), limits or self.limits)

    @abstractmethod
    async def _run(self, command: Command, workdir: Path, limits: Limits) -> SandboxResult:
        """Run one validated command in `workdir` (absolute, existing) under `limits`."""

    @abstractmethod
    def protections(self) -> dict[str, bool | str]:
        """What this backend enforces on this host: True, False, or words saying how."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release what the backend holds between runs (a launcher, a client)."""

    @staticmethod
    async def supervise(
        *,
        wait: Awaitable[int],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        kill: Callable[[], None],
        limits: Limits,
        started: float,
    ) -> Finished:
        """Wait for the main process (`wait` gives its exit code) while reading its output,
        with the wall-clock limit. `kill` must end everything the run started; it is
        called on timeout, on cancellation, and when something still holds the output
        pipes after the main process ended (a daemonised grandchild)."""
        out = BoundedReader(limits.max_output_bytes)
        err = BoundedReader(limits.max_output_bytes)
        readers = [
            asyncio.ensure_future(out.read_to_end(stdout)),
            asyncio.ensure_future(err.read_to_end(stderr)),
        ]
        waiter = asyncio.ensure_future(wait)
        timed_out = False
        try:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), limits.wall_seconds)
            except TimeoutError:
                timed_out = True
                kill()
            exit_code = await waiter
            _, pending = await asyncio.wait(readers, timeout=DRAIN_SECONDS)
            if pending:
                kill()
                await asyncio.wait(readers, timeout=DRAIN_SECONDS)
        except BaseException:
            kill()
            raise
        finally:
            for task in [*readers, waiter]:
                task.cancel()
            for task in [*readers, waiter]:
                with contextlib.suppress(BaseException):
                    await task
        return Finished(exit_code, timed_out, out, err, started)


_logged_reports: set[str] = set()


def log_protections(sandbox: Sandbox) -> None:
    """Say at start what this host enforces, and loudly what it does not (once per
    distinct report, not per sandbox made)."""
    report = sandbox.protections()
    if repr(report) in _logged_reports:
        return
    _logged_reports.add(repr(report))
    missing = [name for name, value in report.items() if value is False]
    logger.info(
        "%s sandbox protections: %s",
        sandbox.name,
        "; ".join(f"{name}: {value}" for name, value in report.items() if value is not False),
    )
    if missing:
        logger.warning("%s sandbox does NOT enforce: %s", sandbox.name, ", ".join(missing))
