"""Which holders process-backend runs take, for the tests of sandboxes set up ahead."""

from __future__ import annotations

import pytest

from tools.sandbox.process import Holder, Holders, SandboxSetup


def record_holders_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[bool, SandboxSetup]]:
    """For each process-backend run from now on: whether it took a holder bound ahead,
    and the sandbox it asked for."""
    taken: list[tuple[bool, SandboxSetup]] = []
    take = Holders.take

    async def recording(self: Holders, setup: SandboxSetup | None) -> Holder:
        holder = await take(self, setup)
        if setup is not None:  # (not the fallback of a run whose set-up sandbox failed)
            taken.append((holder.bound_to is not None, setup))
        return holder

    monkeypatch.setattr(Holders, "take", recording)
    return taken


def bound(taken: list[tuple[bool, SandboxSetup]]) -> list[bool]:
    """Whether each run recorded took a holder bound ahead."""
    return [took_bound for took_bound, _ in taken]
