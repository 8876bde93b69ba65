"""The typed frames every market source yields, so nothing downstream knows which one ran.

Timestamps are naive ``Datetime("us")`` holding UTC (the warehouse stores
``TIMESTAMP`` in UTC). ``ts`` is the candle open time.
"""

from __future__ import annotations

import dataclasses

import polars as pl

from pipeline.core.timegrid import grid_offset_expr

TS = pl.Datetime("us")

CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "interval": pl.String,
    "ts": TS,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "turnover": pl.Float64,  # quote-currency value; null where the source lacks it
    "source": pl.String,
}

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "ts": TS,  # settlement time
    "funding_rate": pl.Float64,  # per settlement period, as a fraction (0.0001 = 0.01%)
    "source": pl.String,
}

OPEN_INTEREST_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "interval": pl.String,
    "ts": TS,
    "open_interest": pl.Float64,  # contracts (base coin for linear)
    "source": pl.String,
}

ORDERBOOK_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String,
    "ts": TS,  # exchange snapshot time
    "bid_px": pl.List(pl.Float64),  # best first
    "bid_sz": pl.List(pl.Float64),
    "ask_px": pl.List(pl.Float64),  # best first
    "ask_sz": pl.List(pl.Float64),
    "source": pl.String,
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema``; a missing column is a clear error."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; have {', '.join(frame.columns)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


# -- the candle rules (written once: the file reader, the ingest gate and the GX suite use these) ----------

CANDLE_KEY: tuple[str, ...] = ("symbol", "interval", "ts")
CANDLE_VALUES: tuple[str, ...] = ("open", "high", "low", "close", "volume")


@dataclasses.dataclass(frozen=True)
class Bound:
    """``column >= other`` (``column > other`` when strict); ``other`` is a column name or a number."""

    column: str
    other: str | float
    strict: bool = False

    def holds(self) -> pl.Expr:
        other = pl.col(self.other) if isinstance(self.other, str) else pl.lit(float(self.other))
        return pl.col(self.column) > other if self.strict else pl.col(self.column) >= other


@dataclasses.dataclass(frozen=True)
class CandleRule:
    """One rule a valid candle satisfies: every bound holds."""

    text: str
    bounds: tuple[Bound, ...]

    def violated(self) -> pl.Expr:
        """True on rows that break the rule (rows with a null or NaN value are left to the completeness rule)."""
        columns = {b.column for b in self.bounds} | {b.other for b in self.bounds if isinstance(b.other, str)}
        incomplete = pl.any_horizontal([pl.col(c).is_null() | pl.col(c).is_nan() for c in sorted(columns)])
        return ~(incomplete.fill_null(True) | pl.all_horizontal([b.holds() for b in self.bounds]).fill_null(True))


CANDLE_RULES: tuple[CandleRule, ...] = (
    CandleRule("prices > 0", tuple(Bound(c, 0, strict=True) for c in ("open", "high", "low", "close"))),
    CandleRule("high >= max(open, close)", (Bound("high", "open"), Bound("high", "close"))),
    CandleRule("low <= min(open, close)", (Bound("open", "low"), Bound("close", "low"))),
    CandleRule("volume >= 0", (Bound("volume", 0),)),
)
COMPLETE = "no null or NaN value"
UNIQUE = "unique (symbol, interval, ts)"
ON_GRID = "ts on the interval grid"


def candle_violations(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Every candle rule ``frame`` (CANDLE_SCHEMA columns, other columns kept) breaks, in a fixed order:
    ``(rule text, the offending rows)``. Consumers phrase the message (file and line, or symbol and ts)."""
    checks: list[tuple[str, pl.Expr]] = [
        (COMPLETE, pl.any_horizontal([pl.col(c).is_null() for c in CANDLE_KEY] + [
            pl.col(c).is_null() | pl.col(c).is_nan() for c in CANDLE_VALUES])),
        (UNIQUE, pl.struct(list(CANDLE_KEY)).is_duplicated()),
        (ON_GRID, grid_offset_expr(frame["interval"].unique().to_list()) != 0),
        *[(rule.text, rule.violated()) for rule in CANDLE_RULES],
    ]
    found = []
    for text, mask in checks:
        bad = frame.filter(mask)
        if bad.height:
            found.append((text, bad))
    return found
