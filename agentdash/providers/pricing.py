"""What a model call cost, from the price table in settings.AGENTDASH_MODEL_PRICES."""

import logging
import re
from decimal import Decimal

from django.conf import settings

from .base import Usage

logger = logging.getLogger(__name__)

_PER_TOKEN = Decimal(1_000_000)  # prices are per million tokens
# A dated snapshot ("claude-sonnet-5-5-20261015", "gpt-4.1-2025-04-14") costs what its
# model does; anything else ("gpt-4.1-nano") must be priced under its own name.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")
_warned_unpriced: set[str] = set()


def _prices_for(model: str) -> dict[str, object] | None:
    prices: dict[str, dict[str, object]] = settings.AGENTDASH_MODEL_PRICES
    return prices.get(model) or prices.get(_SNAPSHOT_SUFFIX.sub("", model))


def cost_of(model: str, usage: Usage) -> Decimal:
    """The cost in USD of `usage` on `model`. A model missing from the table costs 0,
    with one warning per model, so that an unpriced model never stops a session."""
    prices = _prices_for(model)
    if prices is None:
        if model not in _warned_unpriced:
            _warned_unpriced.add(model)
            logger.warning(
                "No price for model %r in AGENTDASH_MODEL_PRICES: its cost is counted as 0", model
            )
        return Decimal(0)
    input_price = _price(prices, "input", 0)
    total = (
        usage.input_tokens * input_price
        + usage.output_tokens * _price(prices, "output", 0)
        # Cached input is input: without a price of its own, it costs what input does.
        + usage.cache_read_tokens * _price(prices, "cache_read", input_price)
        + usage.cache_write_tokens * _price(prices, "cache_write", input_price)
    )
    return total / _PER_TOKEN


def _price(prices: dict[str, object], key: str, default: Decimal | int) -> Decimal:
    # str() first: a float such as 0.1 would otherwise bring its binary error along.
    return Decimal(str(prices.get(key, default)))
