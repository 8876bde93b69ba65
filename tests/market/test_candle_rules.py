"""The candle rules: one set (pipeline.market.schemas), tested once against a plain row-by-row reading,
and each consumer (file reader, ingest gate, GX suite) rejecting a bad candle with a message naming where."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from pipeline.market.base import MarketDataError
from pipeline.market.files import read_candle_file
from pipeline.market.ingest import ingest_candles
from pipeline.market.schemas import CANDLE_RULES, CANDLE_SCHEMA, COMPLETE, ON_GRID, UNIQUE, candle_violations
from pipeline.market.synthetic import SyntheticSource
from pipeline.core.timegrid import to_ms
from pipeline.quality.candles_suite import candle_expectations, validate_candles

HOUR = 3_600_000
T0 = dt.datetime(2024, 1, 1)
NOW = dt.datetime(2025, 3, 1)


def plain_rules(row: dict, seen: set, step_ms: int) -> set[str]:
    """The rules one candle breaks, read off the row with plain Python (the independent oracle)."""
    values = [row[c] for c in ("open", "high", "low", "close", "volume")]
    broken = set()
    if (row["symbol"], row["interval"], row["ts"]) in seen:
        broken.add(UNIQUE)
    if to_ms(row["ts"]) % step_ms:
        broken.add(ON_GRID)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return broken | {COMPLETE}  # the value rules leave incomplete rows to the completeness rule
    if min(row["open"], row["high"], row["low"], row["close"]) <= 0:
        broken.add("prices > 0")
    if row["high"] < max(row["open"], row["close"]):
        broken.add("high >= max(open, close)")
    if row["low"] > min(row["open"], row["close"]):
        broken.add("low <= min(open, close)")
    if row["volume"] < 0:
        broken.add("volume >= 0")
    return broken


def random_candles(seed: int, n: int = 400) -> pl.DataFrame:
    """Candles where a fraction of rows break one or more rules at random."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(0, 10, n)
    ts = np.arange(n, dtype=np.int64) * HOUR + to_ms(T0)
    for column, bad in ((high, lambda i: low[i] * 0.99), (low, lambda i: high[i] * 1.01)):
        for i in rng.choice(n, 8, replace=False):
            column[i] = bad(i)
    for i in rng.choice(n, 4, replace=False):
        volume[i] = -rng.uniform(0.1, 5)
    for i in rng.choice(n, 4, replace=False):
        low[i] = -1.0 if i % 2 else 0.0
    for i in rng.choice(n, 3, replace=False):
        close[i] = np.nan
    for i in rng.choice(n, 4, replace=False):
        ts[i] += 60_000 * int(rng.integers(1, 59))
    for i in rng.choice(np.arange(1, n), 4, replace=False):
        ts[i] = ts[i - 1]
    return pl.DataFrame(
        {"symbol": "BTCUSDT", "interval": "60", "ts": pl.from_epoch(pl.Series(ts), time_unit="ms"),
         "open": open_, "high": high, "low": low, "close": close, "volume": volume,
         "turnover": volume * close, "source": "test"}
    ).select([pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items()])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rules_agree_with_a_plain_reading_of_every_row(seed):
    frame = random_candles(seed)
    rows = frame.to_dicts()
    counts = {}
    for key, part in frame.group_by(["symbol", "interval", "ts"]):
        counts[key] = part.height
    expected: dict[str, set[int]] = {}
    for i, row in enumerate(rows):
        broken = plain_rules(row, {k for k, c in counts.items() if c > 1}, HOUR)
        for rule in broken:
            expected.setdefault(rule, set()).add(i)
    indexed = frame.with_row_index("i")
    got = {rule: set(bad["i"].to_list()) for rule, bad in candle_violations(indexed)}
    assert got == expected
    assert {r.text for r in CANDLE_RULES} | {COMPLETE, UNIQUE, ON_GRID} == set(got)  # every rule was exercised


def test_good_candles_break_no_rule():
    frame = SyntheticSource(symbols=("BTCUSDT",), origin="2024-01-01", now=lambda: NOW).candles(
        "BTCUSDT", "60", T0, T0 + dt.timedelta(days=5)
    )
    assert frame.height == 120 and candle_violations(frame) == []


def test_the_gx_suite_is_built_from_the_rules():
    kinds = [type(e).__name__ for e in candle_expectations()]
    bounds = sum(len(rule.bounds) for rule in CANDLE_RULES)
    pair_or_between = [k for k in kinds if k in ("ExpectColumnPairValuesAToBeGreaterThanB",
                                                  "ExpectColumnValuesToBeBetween")]
    assert len(pair_or_between) == bounds


# -- each consumer rejects each value rule, naming where ---------------------------------------------------

BREAKS = {
    "prices > 0": lambda c: {**c, "open": -c["open"]},
    "high >= max(open, close)": lambda c: {**c, "high": min(c["open"], c["close"]) - 0.5},
    "low <= min(open, close)": lambda c: {**c, "low": max(c["open"], c["close"]) + 0.5},
    "volume >= 0": lambda c: {**c, "volume": -3.0},
}


def good_rows(n: int = 6) -> list[dict]:
    rows, price = [], 100.0
    for i in range(n):
        o, c = price, price + (1 if i % 2 else -0.5)
        rows.append({"ts": to_ms(T0) + i * HOUR, "open": o, "high": max(o, c) + 0.25, "low": min(o, c) - 0.25,
                     "close": c, "volume": 10.0 + i})
        price = c
    return rows


@pytest.mark.parametrize("rule", list(BREAKS))
def test_file_reader_names_file_and_line(tmp_path, rule):
    rows = good_rows()
    rows[3] = BREAKS[rule](rows[3])
    path = tmp_path / "bybit_BTCUSDT_60.csv"
    lines = ["ts,open,high,low,close,volume"] + [",".join(str(r[c]) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MarketDataError) as err:
        read_candle_file(path, "BTCUSDT", "60")
    message = str(err.value)
    assert f"{path}, line 5: candle at ts 2024-01-01 03:00:00 UTC" in message
    assert f"breaks the rule {rule}" in message


class OneBadCandle:
    name = "tampered"

    def __init__(self, rule):
        self.inner = SyntheticSource(symbols=("BTCUSDT",), origin="2024-01-01", now=lambda: NOW)
        self.rule = rule

    def candles(self, symbol, interval, start, end):
        frame = self.inner.candles(symbol, interval, start, end)
        rows = frame.to_dicts()
        rows[3] = BREAKS[self.rule](rows[3])
        return pl.DataFrame(rows, schema=CANDLE_SCHEMA)


@pytest.mark.parametrize("rule", list(BREAKS))
def test_ingest_gate_names_symbol_and_ts(warehouse, rule):
    with pytest.raises(MarketDataError) as err:
        ingest_candles(OneBadCandle(rule), warehouse, ["BTCUSDT"], ["60"], T0, T0 + dt.timedelta(days=1), now=NOW)
    assert f"1 candle(s) break the rule {rule}: BTCUSDT 60 2024-01-01 03:00:00" in str(err.value)
    assert not warehouse.table_exists("raw.candles") or warehouse.query("select * from raw.candles").height == 0


@pytest.mark.parametrize("rule", list(BREAKS))
def test_gx_suite_names_symbol_and_ts(rule):
    frame = OneBadCandle(rule).candles("BTCUSDT", "60", T0, T0 + dt.timedelta(days=1))
    outcome = validate_candles(frame)
    assert not outcome.success
    rule_columns = {b.column for r in CANDLE_RULES if r.text == rule for b in r.bounds}
    failures = [f for f in outcome.failures if f["columns"].split(",")[0].strip() in rule_columns]
    assert failures, outcome.summary()
    for failure in failures:
        assert failure["examples"] == [{"symbol": "BTCUSDT", "interval": "60", "ts": "2024-01-01 03:00:00"}]
