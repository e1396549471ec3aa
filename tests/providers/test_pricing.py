"""Cost per call from the price table in settings."""

import logging
from decimal import Decimal

import pytest

from agentdash.providers import Usage, cost_of

MILLION = 1_000_000


def test_it_prices_each_kind_of_token_per_million():
    usage = Usage(
        input_tokens=MILLION,
        output_tokens=MILLION,
        cache_read_tokens=MILLION,
        cache_write_tokens=MILLION,
    )

    assert cost_of("claude-sonnet-5-5", usage) == Decimal("14.70")
    assert cost_of("claude-haiku-5-5", usage) == Decimal("0.735")
    assert cost_of("claude-opus-5-5", usage) == Decimal("29.40")


def test_a_small_call_costs_an_exact_decimal():
    usage = Usage(input_tokens=1_234, output_tokens=567)

    # (1234 * $2 + 567 * $10) / 1M, with no float rounding on the way
    assert cost_of("claude-sonnet-5-5", usage) == Decimal("0.008138")


def test_a_dated_snapshot_costs_what_its_model_does():
    usage = Usage(input_tokens=MILLION)

    assert cost_of("claude-sonnet-5-5-20261015", usage) == Decimal(2)
    assert cost_of("gpt-4.1-2025-04-14", usage) == Decimal(2)


def test_cache_prices_default_to_the_input_price(settings):
    settings.AGENTDASH_MODEL_PRICES = {"house-model": {"input": "1.5", "output": "3"}}

    usage = Usage(cache_read_tokens=MILLION, cache_write_tokens=MILLION)

    assert cost_of("house-model", usage) == Decimal(3)


def test_an_unknown_model_costs_nothing_and_is_logged_once(caplog):
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    with caplog.at_level(logging.WARNING, logger="agentdash.providers"):
        first = cost_of("mystery-model-x1", usage)
        second = cost_of("mystery-model-x1", usage)

    assert first == second == Decimal(0)
    assert caplog.text.count("mystery-model-x1") == 1
    assert "AGENTDASH_MODEL_PRICES" in caplog.text


@pytest.mark.parametrize("model", ["gpt-4.1-nano", "claude-sonnet-5-5-preview"])
def test_a_different_model_is_not_priced_by_its_prefix(model):
    assert cost_of(model, Usage(input_tokens=MILLION)) == Decimal(0)


def test_usage_adds_up_for_session_totals():
    total = Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40)

    assert total == Usage(11, 22, 33, 44)
    assert total.total_tokens == 110
