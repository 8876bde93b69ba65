"""A planted warehouse for the drift tests: features, labels, a registry and predictions written by hand (no training).

Two symbols, 1600 hourly bars of i.i.d. standard-normal features. The live models
(``tcn``, ``wavenet``, fold 1) were trained on bars 0..799. ``drift_symbols``
get every feature shifted by +1.5 on the newest 720 bars (the current window), the
others re-draw reference rows there; ``decay`` names
(symbol, architecture) pairs whose newest predictions are all wrong (the others
are right on 60 % of the bars, their walk-forward accuracy).
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.features.columns import MODEL_INPUT_COLUMNS
from pipeline.warehouse import Warehouse

SYMBOLS = ("AAAUSDT", "BBBUSDT")
ARCHS = ("tcn", "wavenet")
BARS = 1600
START = dt.datetime(2025, 1, 1)


def ts_of(i: int) -> dt.datetime:
    return START + dt.timedelta(hours=i)


def plant(path, drift_symbols=(), decay=(), seed=0, bars=BARS) -> tuple[Warehouse, Settings]:
    rng = np.random.default_rng(seed)
    wh = Warehouse(path)
    wh.ensure_schema()
    ts = [ts_of(i) for i in range(bars)]
    feats, labels, preds = [], [], []
    for symbol in SYMBOLS:
        x = rng.normal(0, 1, (bars, len(MODEL_INPUT_COLUMNS)))
        if symbol in drift_symbols:
            x[-720:] += 1.5
        else:  # the current window re-draws reference rows: no drift, whatever the seed
            x[-720:] = x[10:800][rng.permutation(790)[:720]]
        frame = pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "is_warmup": [i < 10 for i in range(bars)]})
        feats.append(frame.with_columns([pl.Series(c, x[:, k]) for k, c in enumerate(MODEL_INPUT_COLUMNS)]))
        cls = rng.integers(0, 3, bars)
        labels.append(pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "horizon": 1,
                                    "direction": (cls - 1).astype(np.int64),
                                    "fwd_return": rng.normal(0, 0.01, bars), "fwd_volatility": np.full(bars, 0.01)}))
        for arch in ARCHS:
            wrong = (symbol, arch) in decay
            hit = np.zeros(bars, bool) if wrong else rng.random(bars) < 0.6
            guess = np.where(hit, cls, (cls + 1) % 3)
            p = np.full((bars, 3), 0.2)
            p[np.arange(bars), guess] = 0.6
            rows = slice(800, bars)
            preds.append(pl.DataFrame({
                "model_id": f"{arch}-fold1", "symbol": symbol, "interval": "60", "ts": ts[rows],
                "p_down": p[rows, 0], "p_flat": p[rows, 1], "p_up": p[rows, 2]}))
    registry = []
    for arch in ARCHS:
        for fold, (a, b) in enumerate([(0, 599), (0, 799)]):
            registry.append({"model_id": f"{arch}-fold{fold}", "architecture": arch, "variant": "default",
                             "symbol": ",".join(SYMBOLS), "interval": "60", "fold": fold,
                             "train_start": ts_of(a), "train_end": ts_of(b),
                             "test_start": ts_of(b + 2), "test_end": ts_of(b + 100),
                             "metrics": json.dumps({"oos_accuracy": 0.6, "n_test": 100,
                                                    "majority_accuracy": 0.34}),
                             "artifact_path": "", "trigger": "manual"})
    with duckdb.connect(str(path)) as con:
        for name, frame in (("candle_features", pl.concat(feats)), ("labels", pl.concat(labels))):
            con.register("f", frame)
            con.execute(f"create or replace table features.{name} as select * from f")
            con.unregister("f")
    wh.replace_rows("models.registry", pl.DataFrame(registry), "true")
    wh.replace_rows("predictions.oos", pl.concat(preds), "true")
    return wh, Settings(data_dir=path.parent, symbols=SYMBOLS)
