"""Walk-forward training on a tiny dbt-built warehouse: windows, drops, folds in time, determinism, artifacts."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.config import Settings
from pipeline.dbt_runner.invoke import run_dbt
from pipeline.market.schemas import CANDLE_SCHEMA, conform
from pipeline.training.datasets import build_window_store, load_series, naive_window
from pipeline.training.artifacts import load_artifact
from pipeline.training.inference import predict
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import time_folds, train_architecture, train_fold
from pipeline.warehouse import Warehouse


def _walk(symbol, bars, seed):
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, bars)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, bars)))
    vol = rng.lognormal(3, 0.5, bars)
    start = dt.datetime(2024, 1, 1)
    frame = pl.DataFrame({"symbol": symbol, "interval": "60",
                          "ts": [start + dt.timedelta(hours=i) for i in range(bars)],
                          "open": open_, "high": high, "low": low, "close": close, "volume": vol,
                          "turnover": vol * close, "source": "synthetic"})
    return conform(frame, CANDLE_SCHEMA, "walk")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "warehouse.duckdb"
    a = _walk("AAAUSDT", 1400, 1)
    a = a.filter(~pl.col("ts").is_between(dt.datetime(2024, 1, 30), dt.datetime(2024, 1, 30, 5)))  # an outage
    candles = pl.concat([a, _walk("BBBUSDT", 1400, 2)])
    wh = Warehouse(path)
    wh.ensure_schema()
    wh.replace_rows("raw.candles", candles, "true")
    run_dbt(["build"], wh.path)
    return wh


def _settings(wh, **kw):
    return Settings(data_dir=wh.path.parent, symbols=("AAAUSDT", "BBBUSDT"), **kw)


def _config(**kw):
    base = dict(architecture="tcn", window=16, n_folds=2, epochs=2, batch_size=64, embargo=2,
                train_min_fraction=0.5, max_train_windows=0)
    base.update(kw)
    return TrainingConfig(**base)


def test_windows_equal_naive_and_drops_are_counted(warehouse, tmp_path):
    series = [load_series(warehouse, s, "60", 1) for s in ("AAAUSDT", "BBBUSDT")]
    store = build_window_store(series, tmp_path, 16, 1)
    assert isinstance(store.rows, np.memmap)
    ends = store.sample_rows[::37]
    got = store.gather(ends)
    want = np.stack([naive_window(np.asarray(store.rows), e, 16) for e in ends])
    np.testing.assert_array_equal(got, want)
    # the outage of AAAUSDT restarts its indicators (gap policy segment): the windows over it and the 199 bars
    # after it are warm-up drops; the window whose label horizon crosses it is a gap drop
    assert store.dropped["gap"] >= 1
    valid = store.index[store.sample_rows]
    ts_valid = valid.filter(pl.col("symbol") == "AAAUSDT")["ts_ms"].to_numpy()
    restart_ms = int(dt.datetime(2024, 1, 30, 6, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert not ((ts_valid >= restart_ms) & (ts_valid < restart_ms + 199 * 3_600_000)).any()
    assert store.dropped["warmup"] > 0
    # every valid window lies on one series, without warm-up rows or gaps
    idx = store.index
    ts = idx["ts_ms"].to_numpy()
    sym = idx["symbol"].to_numpy()
    for e in store.sample_rows[::11]:
        assert (np.diff(ts[e - 15:e + 1]) == 3_600_000).all() and len(set(sym[e - 15:e + 1])) == 1


def test_folds_are_cut_in_time_and_train_deterministically(warehouse, tmp_path):
    series = [load_series(warehouse, s, "60", 1) for s in ("AAAUSDT", "BBBUSDT")]
    store = build_window_store(series, tmp_path, 16, 1)
    config = _config()
    for fold, fit, val, test, grid in time_folds(store, config):
        assert store.sample_ts_ms[fit].max() < store.sample_ts_ms[val].min()
        assert store.sample_ts_ms[val].max() < store.sample_ts_ms[test].min()
    fold, fit, val, test, grid = time_folds(store, config)[0]
    m1, c1, i1 = train_fold(store, config, 0, fit, val, tmp_path / "a", log=lambda s: None)
    m2, c2, i2 = train_fold(store, config, 0, fit, val, tmp_path / "b", log=lambda s: None)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    # resume: an interrupted fold (1 epoch done) resumed equals the uninterrupted run
    def interrupt(line):
        raise KeyboardInterrupt(line)

    with pytest.raises(KeyboardInterrupt):
        train_fold(store, config, 0, fit, val, tmp_path / "c", log=interrupt)
    m3, _, _ = train_fold(store, config, 0, fit, val, tmp_path / "c", log=lambda s: None)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m3.state_dict()[k]), k
    # a checkpoint of the same settings and data but another network (older model code, e.g. a narrower head)
    # is stale: the fold trains afresh instead of failing to load it
    with pytest.raises(KeyboardInterrupt):
        train_fold(store, config, 0, fit, val, tmp_path / "d", log=interrupt)
    ckpt = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    name = next(k for k in ckpt["model"] if k.endswith("linear.weight"))
    ckpt["model"][name] = ckpt["model"][name][:, :1].clone()
    torch.save(ckpt, tmp_path / "d" / "checkpoint.pt")
    lines = []
    m4, _, _ = train_fold(store, config, 0, fit, val, tmp_path / "d", log=lines.append)
    assert any("holds another network" in line for line in lines), lines
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m4.state_dict()[k]), k


def dataclasses_replace(config, **kw):
    import dataclasses
    return dataclasses.replace(config, **kw)


def test_train_architecture_artifacts_and_registry(warehouse):
    settings = _settings(warehouse)
    outcome = train_architecture(warehouse, settings, _config(), log=lambda s: None)
    assert outcome.registry.height == 2 and outcome.weights_finite
    metrics = json.loads(outcome.registry["metrics"][0])
    assert {"edge_rule", "oos_log_loss", "prior_log_loss", "oos_accuracy"} <= set(metrics)
    counts = store_training(warehouse, outcome)
    assert counts["predictions.oos"] == outcome.predictions.height
    again = store_training(warehouse, outcome)
    assert warehouse.query("select count(*) n from predictions.oos")["n"][0] == again["predictions.oos"]
    # the artifact reloads without pickle and predicts the same
    path = outcome.registry["artifact_path"][0]
    module = load_artifact(path)
    cfg = json.loads((__import__("pathlib").Path(path) / "config.json").read_text())
    series = [load_series(warehouse, s, "60", 1) for s in settings.symbols]
    store = build_window_store(series, settings.artifacts_dir, 16, 1)
    test_ts = outcome.predictions.filter(pl.col("model_id") == outcome.registry["model_id"][0])
    first = store.sample_ts_ms >= cfg["test_range_ms"][0]
    samples = np.flatnonzero(first & (store.sample_ts_ms <= cfg["test_range_ms"][1]))
    proba = predict(module, store, samples)[0]
    np.testing.assert_allclose(proba[:, 2], test_ts["p_up"].to_numpy(), rtol=1e-6)
    assert test_ts.height == len(samples)
    assert cfg["export"]["error"] is None
    program = torch.export.load(__import__("pathlib").Path(path) / "program.pt2")
    x = torch.from_numpy(store.gather(store.sample_rows[samples[:4]]))
    with torch.no_grad():
        exported = program.module()(x)[0].softmax(1).numpy()
    np.testing.assert_allclose(exported, proba[:4], rtol=1e-5, atol=1e-6)
