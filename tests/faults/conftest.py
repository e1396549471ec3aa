"""Fault tests: real processes (workers, the web server, Redis) killed or cut off while
they work. The helpers are the ones the crash-safety tests use (tests/runner)."""

from __future__ import annotations

from tests.runner.test_crash_safety import spawn_worker as spawn_worker
