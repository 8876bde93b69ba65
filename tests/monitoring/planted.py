"""A planted warehouse for drift checks: features, labels, a model registry and predictions written by hand.

No training and no market: ``bars`` hourly bars per symbol from ``start`` of
i.i.d. standard-normal model-input features (``MODEL_INPUT_COLUMNS``; the first
``warmup_bars`` flagged ``is_warmup``), labels of a uniform random direction,
and per architecture one registry row a fold. Fold ``k`` trains on bars
``0 .. test_starts[k] - 1 - embargo`` and is tested on ``test_starts[k]`` up
to the next fold's test start (the last fold: up to the newest bar); the
predictions of that span are right on ``hit_rate`` of the bars (the fold's
``oos_accuracy``), or on none for the (symbol, architecture) pairs in
``decay``.

``drift_symbols`` get every feature shifted by ``shift`` on the newest
``current_bars`` bars (the drift monitor's current window); the other symbols
re-draw rows of the live model's training range there (no drift, whatever the
seed). Used by ``tests/monitoring`` and ``bench/drift.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.warehouse import Warehouse


def plant_drift_warehouse(path: Path, *, symbols: Sequence[str], start: dt.datetime, bars: int,
                          architectures: Sequence[str], test_starts: Sequence[int], embargo: int = 1,
                          drift_symbols: Sequence[str] = (), shift: float = 1.5,
                          decay: Sequence[tuple[str, str]] = (), warmup_bars: int = 10, current_bars: int = 720,
                          hit_rate: float = 0.6, seed: int = 0) -> Warehouse:
    """Write the planted tables (see the module docstring) into the warehouse at ``path`` and return it."""
    edges = [*test_starts, bars]
    if not all(0 < a < b for a, b in zip(edges, edges[1:])) or edges[0] - 1 - embargo < 0:
        raise ValueError(f"test_starts {tuple(test_starts)} must rise within 1 .. {bars - 1} (bars) and leave "
                         f"a training span before the embargo of {embargo} bars")
    reference = np.arange(warmup_bars, edges[-2] - embargo)  # the live (last) fold's training rows, warm-up out
    if reference.size < current_bars:
        raise ValueError(f"{bars} bars with the live fold's test from bar {edges[-2]}: the training range has "
                         f"{reference.size} rows after {warmup_bars} warm-up bars, fewer than the current window's "
                         f"{current_bars}; plant more bars or start the folds later")
    rng = np.random.default_rng(seed)
    wh = Warehouse(path)
    wh.ensure_schema()
    ts = [start + dt.timedelta(hours=i) for i in range(bars)]
    feats, labels, preds = [], [], []
    for symbol in symbols:
        x = rng.normal(0, 1, (bars, len(MODEL_INPUT_COLUMNS)))
        if symbol in drift_symbols:
            x[-current_bars:] += shift
        else:
            x[-current_bars:] = x[reference][rng.permutation(reference.size)[:current_bars]]
        frame = pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts,
                              "is_warmup": [i < warmup_bars for i in range(bars)]})
        feats.append(frame.with_columns([pl.Series(c, x[:, k]) for k, c in enumerate(MODEL_INPUT_COLUMNS)]))
        cls = rng.integers(0, 3, bars)
        labels.append(pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "horizon": 1,
                                    "direction": (cls - 1).astype(np.int64),
                                    "fwd_return": rng.normal(0, 0.01, bars), "fwd_volatility": np.full(bars, 0.01)}))
        for arch in architectures:
            hit = np.zeros(bars, bool) if (symbol, arch) in decay else rng.random(bars) < hit_rate
            guess = np.where(hit, cls, (cls + 1) % 3)
            p = np.full((bars, 3), 0.2)
            p[np.arange(bars), guess] = 0.6
            for fold, (a, b) in enumerate(zip(edges, edges[1:])):
                preds.append(pl.DataFrame({
                    "model_id": f"{arch}-fold{fold}", "symbol": symbol, "interval": "60", "ts": ts[a:b],
                    "p_down": p[a:b, 0], "p_flat": p[a:b, 1], "p_up": p[a:b, 2]}))
    registry = [{"model_id": f"{arch}-fold{fold}", "architecture": arch, "variant": "default",
                 "symbol": ",".join(symbols), "interval": "60", "fold": fold,
                 "train_start": ts[0], "train_end": ts[a - 1 - embargo], "test_start": ts[a], "test_end": ts[b - 1],
                 "metrics": json.dumps({"oos_accuracy": hit_rate, "n_test": b - a, "majority_accuracy": 0.34}),
                 "artifact_path": "", "trigger": "manual"}
                for arch in architectures for fold, (a, b) in enumerate(zip(edges, edges[1:]))]
    with duckdb.connect(str(path)) as con:
        for name, frame in (("candle_features", pl.concat(feats)), ("labels", pl.concat(labels))):
            con.register("f", frame)
            con.execute(f"create or replace table features.{name} as select * from f")
            con.unregister("f")
    wh.replace_rows("models.registry", pl.DataFrame(registry), "true")
    wh.replace_rows("predictions.oos", pl.concat(preds), "true")
    return wh
