"""A small warehouse with a tiny trained model for the live-signal tests (features planted, no dbt).

Two symbols, 700 hourly candles (a random walk) and planted model-input
features (standard normal; the first 20 rows are warm-up, NULL); labels from
the next close. ``tcn`` is trained tiny (window 16, two folds, one epoch) by
the real walk-forward code and stored in models.registry / predictions.oos.
``extend`` appends candles after training (the "live" bars). For the image models:
``add_symbol`` adds a short series (too short for an image), ``add_snapshots``
one top-5 order-book snapshot in every bar, and ``train_image_model`` builds a
model's encoding and trains it tiny (same recipe as ``tcn``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.encodings.build import build_encoding
from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.models.catalogue import image_model_inputs
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import train_architecture
from pipeline.warehouse import Warehouse

IMAGE_MODELS = image_model_inputs()

SYMBOLS = ("AAAUSDT", "BBBUSDT")
START = dt.datetime(2025, 1, 1)
TINY = dict(architecture="tcn", window=16, n_folds=2, epochs=1, batch_size=64, embargo=2, train_min_fraction=0.5,
            max_train_windows=400)


def _rows(symbol: str, first: int, n: int, rng, last_close: float):
    ts = [START + dt.timedelta(hours=first + i) for i in range(n)]
    close = last_close * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[last_close], close[:-1]])
    candles = pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "open": open_,
                            "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
                            "close": close, "volume": rng.lognormal(3, 0.3, n), "source": "synthetic"})
    x = rng.normal(0, 1, (n, len(MODEL_INPUT_COLUMNS)))
    warm = np.array([first + i < 20 for i in range(n)])
    x[warm] = np.nan
    feats = pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "is_warmup": warm}).with_columns(
        [pl.Series(c, x[:, k]).fill_nan(None) for k, c in enumerate(MODEL_INPUT_COLUMNS)])
    return candles, feats


def _write(wh: Warehouse, candles: pl.DataFrame, feats: pl.DataFrame) -> None:
    with wh.connect() as con:
        con.register("c", candles)
        con.execute("insert into raw.candles by name select * from c")
        con.register("f", feats)
        exists = con.execute("select count(*) from information_schema.tables where table_schema = 'features' "
                             "and table_name = 'candle_features'").fetchall()[0][0]
        con.execute("insert into features.candle_features by name select * from f" if exists
                    else "create table features.candle_features as select * from f")
        # labels from the next close (unknown on the newest bar)
        con.execute("""
            create or replace table features.labels as
            select symbol, interval, ts, 1 as horizon, lead(close) over w / close - 1 as fwd_return,
                   sign(round(1000 * (lead(close) over w / close - 1))) as direction, 0.004 as fwd_volatility
            from raw.candles window w as (partition by symbol, interval order by ts)""")


def build(path, bars: int = 700, seed: int = 0) -> tuple[Warehouse, Settings]:
    rng = np.random.default_rng(seed)
    wh = Warehouse(path)
    wh.ensure_schema()
    parts = [_rows(s, 0, bars, rng, 100.0 * (k + 1)) for k, s in enumerate(SYMBOLS)]
    _write(wh, pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts]))
    settings = Settings(data_dir=path.parent, symbols=SYMBOLS)
    outcome = train_architecture(wh, settings, TrainingConfig(**TINY), log=lambda _: None)
    store_training(wh, outcome)
    return wh, settings


def extend(wh: Warehouse, n: int, seed: int = 1) -> None:
    """Append ``n`` candles (and their feature rows) to every symbol."""
    rng = np.random.default_rng(seed)
    last = wh.query("select symbol, max(ts) as ts, arg_max(close, ts) as close from raw.candles group by symbol")
    parts = []
    for row in last.iter_rows(named=True):
        first = int((row["ts"] - START).total_seconds() // 3600) + 1
        parts.append(_rows(row["symbol"], first, n, rng, row["close"]))
    _write(wh, pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts]))


def add_symbol(wh: Warehouse, symbol: str, n: int, seed: int = 2) -> None:
    """A new symbol with ``n`` candles (and feature rows) from START."""
    _write(wh, *_rows(symbol, 0, n, np.random.default_rng(seed), 50.0))


def add_snapshots(wh: Warehouse, symbols, first_hour: int, n: int, seed: int = 3) -> None:
    """One top-5 snapshot 30 minutes into each of the bars ``first_hour .. first_hour + n - 1``, around that
    bar's close."""
    rng = np.random.default_rng(seed)
    ts = [START + dt.timedelta(hours=first_hour + i, minutes=30) for i in range(n)]
    frames = []
    for symbol in symbols:
        close = wh.query("select ts, close from raw.candles where symbol = ? and ts >= ? and ts < ? order by ts",
                         [symbol, START + dt.timedelta(hours=first_hour),
                          START + dt.timedelta(hours=first_hour + n)])["close"].to_numpy()
        steps = np.arange(1, 6) * 0.002
        frames.append(pl.DataFrame({
            "symbol": symbol, "ts": ts,
            "bid_px": [list(c * (1 - steps)) for c in close], "bid_sz": [list(rng.lognormal(0, 1, 5)) for _ in close],
            "ask_px": [list(c * (1 + steps)) for c in close], "ask_sz": [list(rng.lognormal(0, 1, 5)) for _ in close],
            "source": "synthetic"}))
    with wh.connect() as con:
        con.register("o", pl.concat(frames))
        con.execute("insert into raw.orderbook by name select * from o")


def train_image_model(wh: Warehouse, settings: Settings, architecture: str) -> None:
    """Build the encoding of image model ``architecture`` and train it tiny (the ``tcn`` recipe)."""
    build_encoding(wh, settings, IMAGE_MODELS[architecture][1], log=lambda _: None)
    tiny = {k: v for k, v in TINY.items() if k not in ("architecture", "window")}
    config = TrainingConfig.from_settings(settings, architecture, **tiny)
    store_training(wh, train_architecture(wh, settings, config, log=lambda _: None))


@contextlib.contextmanager
def edge_rule(wh: Warehouse, **rule):
    """Every model's stored edge rule with ``rule`` set, restored on exit (the registry rows byte for byte)."""
    original = wh.query("select model_id, cast(metrics as varchar) as m from models.registry")
    try:
        with wh.connect() as con:
            for mid, m in zip(original["model_id"], original["m"]):
                m = json.loads(m)
                m["edge_rule"].update(rule)
                con.execute("update models.registry set metrics = ? where model_id = ?", [json.dumps(m), mid])
        yield
    finally:
        with wh.connect() as con:
            for mid, m in zip(original["model_id"], original["m"]):
                con.execute("update models.registry set metrics = ? where model_id = ?", [m, mid])
