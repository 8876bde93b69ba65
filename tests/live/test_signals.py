"""Live signals and the paper ledger on a tiny trained model: the newest candle's prediction equals the model on
the naive window, the signal follows the fold's edge rule, paper trades pay the cost model and are marked to
market, rebooking adds nothing, and the two assets materialize. The image models' signals:
test_image_signals.py."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from assets.resources import SettingsResource, WarehouseResource
from assets.signals import signals_latest, signals_paper_ledger
from pipeline.core.costs import CostModel
from pipeline.live import INITIAL_EQUITY, book_paper_trades, latest_signals, store_signals
from pipeline.training.datasets import load_series, naive_window
from pipeline.training.artifacts import load_artifact
from tests.live.conftest import SYMBOLS, build, edge_rule, extend


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    wh, settings = build(tmp_path_factory.mktemp("live") / "warehouse.duckdb")
    extend(wh, 5)  # five candles the model never saw
    return wh, settings


def test_signal_is_the_newest_candle_prediction_of_the_live_refit(live):
    wh, settings = live
    result = latest_signals(wh, settings)
    assert result.skipped == []
    sig = result.signals.sort("symbol")
    assert sig["symbol"].to_list() == list(SYMBOLS) and set(sig["architecture"]) == {"tcn"}
    newest = wh.query("select symbol, max(ts) as ts, arg_max(close, ts) as close from raw.candles "
                      "group by symbol order by symbol")
    assert sig["ts"].to_list() == newest["ts"].to_list()
    assert sig["price"].to_list() == newest["close"].to_list()
    registry = wh.query("select model_id, artifact_path from models.registry where role = 'live'")
    assert set(sig["model_id"]) == {registry["model_id"][0]}
    module = load_artifact(registry["artifact_path"][0])
    cfg = json.loads((Path(registry["artifact_path"][0]) / "config.json").read_text())
    for k, symbol in enumerate(cfg["symbols"]):
        series = load_series(wh, symbol, "60", 1, columns=cfg["feature_columns"])
        onehot = np.zeros((series.features.shape[0], len(cfg["symbols"])), np.float32)
        onehot[:, k] = 1
        rows = np.concatenate([series.features, onehot], axis=1)
        window = naive_window(rows, rows.shape[0] - 1, cfg["window"])
        with torch.no_grad():
            proba = module(torch.from_numpy(window[None]))[0].softmax(1).numpy()[0]
        row = sig.filter(pl.col("symbol") == symbol).row(0, named=True)
        np.testing.assert_allclose([row["p_down"], row["p_flat"], row["p_up"]], proba, atol=1e-5)


def test_signal_and_size_follow_the_folds_edge_rule(live):
    wh, settings = live
    # no cost, no margin, returns (-1, 0, +1): the rule is always on the side of p_up - p_down
    with edge_rule(wh, class_returns=[-1.0, 0.0, 1.0], round_trip_cost=0.0, margin=0.0, fraction=0.5):
        sig = latest_signals(wh, settings).signals
        want = np.sign(sig["p_up"].to_numpy() - sig["p_down"].to_numpy())
        assert sig["signal"].to_list() == want.astype(int).tolist()
        assert sig["size"].to_list() == [0.5] * sig.height
        with edge_rule(wh, margin=None):  # a margin no move clears: flat, size 0
            sig = latest_signals(wh, settings).signals
        assert sig["signal"].to_list() == [0] * sig.height and sig["size"].to_list() == [0.0] * sig.height


def test_paper_trades_pay_the_cost_model_and_are_marked_to_market(live):
    wh, settings = live
    candles = wh.query("select ts, close from raw.candles where symbol = 'AAAUSDT' order by ts").tail(4)
    ts, close = candles["ts"].to_list(), candles["close"].to_numpy()

    def signal(i, side, size):
        return pl.DataFrame({"symbol": ["AAAUSDT"], "architecture": ["handmade"], "interval": ["60"], "ts": [ts[i]],
                             "signal": [side], "size": [size], "model_id": ["m"]})

    first = book_paper_trades(wh, settings, signal(0, 1, 0.5))
    costs = CostModel.from_settings(settings, "AAAUSDT")
    qty = 0.5 * INITIAL_EQUITY / close[0]
    fill = close[0] * (1 + costs.slippage)
    fee = qty * fill * costs.fee_rate
    row = first.row(0, named=True)
    assert row["position"] == pytest.approx(qty) and row["fees"] == pytest.approx(fee)
    assert row["equity"] == pytest.approx(INITIAL_EQUITY - qty * (fill - close[0]) - fee)
    assert book_paper_trades(wh, settings, signal(0, 1, 0.5)).height == 0  # booked already

    later = book_paper_trades(wh, settings, signal(3, 0, 0.0))
    assert later["ts"].to_list() == ts[1:]
    assert later["signal"].to_list() == [None, None, 0]
    # held bars earn the position times the close-to-close move; the last one also pays to close
    np.testing.assert_allclose(later["pnl"][:2], qty * np.diff(close[:3]), rtol=1e-12)
    exit_fill = close[3] * (1 - costs.slippage)
    exit_pnl = qty * (close[3] - close[2]) - qty * (close[3] - exit_fill) - qty * exit_fill * costs.fee_rate
    assert later["pnl"][2] == pytest.approx(exit_pnl)
    assert later["position"][2] == 0.0
    ledger = wh.query("select * from signals.paper_ledger where architecture = 'handmade' order by ts")
    assert ledger.height == 4
    assert ledger["equity"][-1] == pytest.approx(INITIAL_EQUITY + ledger["pnl"].sum())
    with pytest.raises(ValueError, match="no AAAUSDT 60 candle"):
        book_paper_trades(wh, settings, signal(3, 1, 1.0).with_columns(pl.col("ts").dt.offset_by("30m")))


def test_signals_assets_write_the_tables(live):
    wh, settings = live
    res = SettingsResource(data_dir=str(settings.data_dir), symbols=",".join(SYMBOLS))
    resources = {"settings": res, "warehouse": WarehouseResource(settings=res)}
    result = dg.materialize([signals_latest, signals_paper_ledger], resources=resources)
    assert result.success
    latest = wh.query("select * from signals.latest order by symbol")
    assert latest.height == 2 and latest["signal"].is_in([-1, 0, 1]).all()
    ledger = wh.query("select * from signals.paper_ledger where architecture = 'tcn'")
    assert ledger.height == 2 and (ledger["ts"].sort() == latest["ts"].sort()).all()
    again = dg.materialize([signals_latest, signals_paper_ledger], resources=resources)
    meta = again.asset_materializations_for_node("signals__paper_ledger")[0].metadata
    assert meta["rows_booked"].value == 0 and "tcn" in meta["ledger"].value

