"""docs/results.md's costs sentence and funding line follow the funding settlements stored for the span."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.backtest.comparison import ComparisonResult, funding_settlements, results_markdown
from pipeline.config import Settings

RESULT = ComparisonResult(pl.DataFrame(), "| the comparison table |", None, 0)


def _costs_sentence(page: str) -> str:
    return next(line for line in page.splitlines() if line.startswith("Markets:"))


def test_the_page_says_funding_was_paid_only_where_the_span_has_settlements(warehouse, funding_rows):
    settings = Settings(data_dir=warehouse.path.parent, symbols=("BTCUSDT", "ETHUSDT"), start="2024-01-02")
    btc = funding_rows("BTCUSDT", 80)  # a settlement every 8 bars from 2024-01-01: some before the span
    warehouse.replace_rows("raw.funding", btc, "true")
    counts = funding_settlements(warehouse, settings)
    in_span = btc.filter(pl.col("ts") >= dt.datetime(2024, 1, 2)).height
    assert counts == {"BTCUSDT": in_span, "ETHUSDT": 0} and 0 < in_span < btc.height

    mixed = results_markdown(RESULT, settings, "make evaluate", None, funding=counts)
    assert "funding on the perpetual of BTCUSDT (the other symbols have no funding" in _costs_sentence(mixed)
    assert f"Funding settlements stored for the span: BTCUSDT {in_span}, ETHUSDT 0. A symbol with 0" in mixed

    unfunded = {"BTCUSDT": 0, "ETHUSDT": 0}
    none = _costs_sentence(results_markdown(RESULT, settings, "make evaluate", None, funding=unfunded))
    assert "funding on the perpetual" not in none and "no funding: the span has no funding settlements" in none

    every = results_markdown(RESULT, settings, "make evaluate", None, funding={"BTCUSDT": 3, "ETHUSDT": 1})
    assert _costs_sentence(every).endswith("bps, funding on the perpetual).") and "A symbol with 0" not in every

    unstated = results_markdown(RESULT, settings, "make evaluate", None)
    assert "funding" not in unstated.lower() and _costs_sentence(unstated).endswith("bps).")
