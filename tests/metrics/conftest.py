"""Each test starts with empty running totals: they live in the process, the rows do not."""

from collections.abc import Iterator

import pytest

from agentdash import metrics


@pytest.fixture(autouse=True)
def _fresh_rollups() -> Iterator[None]:
    for rollup in metrics.ROLLUPS:
        rollup.reset()
    yield
    for rollup in metrics.ROLLUPS:
        rollup.reset()
