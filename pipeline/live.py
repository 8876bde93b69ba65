"""Live signals of the trained models and a paper ledger that trades them. No order is ever sent.

**Signals** (:func:`latest_signals`), per architecture and symbol: the live
refit of the architecture's champion version (``models.live``: trained on every
labelled bar up to the newest, :mod:`pipeline.training.lifecycle`; a version
without one falls back to its newest fold) predicts the bars after its training
range (a fold: the bars since its stored out-of-sample predictions). Every
artifact file is checked against the SHA-256 its registry row stores; a model
whose artifact is missing, damaged or unreadable is skipped with the reason and
the path, and the other architectures still signal. A sequence model reads the
windows of ``features.candle_features`` built as in training
(:func:`pipeline.training.datasets.load_series` / ``build_window_store`` with
the artifact's columns, symbols, window and horizon; a window with a warm-up or
filled row, or across a missing bar, gets no prediction). An image model
(``pipeline.models.catalogue``) reads each bar's image
encoded now from the warehouse candles (or order-book snapshots) by the
encoding's own code (:func:`pipeline.encodings.build.series_images`, the
windows ``build_encoding`` cuts), so a signal never waits for the
``encodings/*`` asset; where that asset already stored an image of the same ts,
the two must be equal (else the symbol is skipped: the candles or the encoder
changed since). The images are cast to the storage dtype, then scaled (pixels,
the fold's saved CNN-TA row scaling) and given their symbol plane by an
:class:`~pipeline.training.images.ImageStore`
(:func:`~pipeline.training.images.inference_store`), exactly as in training. An
order-book model signals only when a full snapshot window ends in the newest
candle (:func:`~pipeline.training.images.bar_images`), else the symbol is
skipped with the reason; so is a configured symbol the fold did not train on
(e.g. the encoding made no image of it). The signal is that
fold's :class:`~pipeline.core.positions.EdgeRule` (its registry metrics,
:func:`pipeline.backtest.model_backtests.edge_rule_of`) run over the fold's segment
exactly as the model backtest runs it: from the fold's first test bar (its
stored ``predictions.oos``) through the bars since (predicted now) to the
newest candle, so "hold while the expected move keeps its side" carries the
same state. The newest bar's target gives the signal (+1 long, -1 short, 0
flat) and the size (fraction of equity); the confidence is the model's
confidence output at that bar. A newest bar without a valid window (image) is
flat, with the reason in :attr:`SignalsResult.skipped`.

**Paper ledger** (:func:`book_paper_trades`), per architecture and symbol: one
row per candle since the last booked one. Each new candle first marks the
position to market at its close; the newest candle then trades to the signal's
target at its close through the backtest's order kernel
(:func:`pipeline.backtest.engine.execute_order`: the same
:class:`~pipeline.core.costs.CostModel` fee and slippage, no leverage).
The first booking starts with ``INITIAL_EQUITY`` (the backtests' default).
Booking twice on the same candles adds nothing. Simplifications: fills at the
signal candle's close (the backtest fills at the next open), no funding, no
stops; bars between two bookings hold the position.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import execute_order
from pipeline.backtest.model_backtests import PROBA_COLUMNS, edge_rule_of
from pipeline.backtest.risk import RiskRules
from pipeline.core.positions import edge_targets, expected_move
from pipeline.encodings.build import (SNAPSHOT_INTERVAL, load_candle_arrays, load_snapshots,
                                      series_images, spec)
from pipeline.encodings.image_files import CHUNK, open_images
from pipeline.core.timegrid import interval_ms
from pipeline.core.windows import contiguous_window_ends, valid_window_ends
from pipeline.training.datasets import build_window_store, load_series
from pipeline.encodings.indicator_image import IndicatorScaling
from pipeline.training.images import bar_images, inference_store
from pipeline.training.artifacts import load_artifact, verify_artifact
from pipeline.training.inference import predict

SIGNALS_TABLE = "signals.latest"
LEDGER_TABLE = "signals.paper_ledger"
INITIAL_EQUITY = 10_000.0


_MODEL_COLUMNS = ("select model_id, architecture, symbol, interval, fold, test_start, train_start, train_end, "
                  "artifact_path, cast(metrics as varchar) as metrics, created_at, version, role, "
                  "cast(artifact_sha256 as varchar) as artifact_sha256, "
                  "coalesce(test_start, train_end + interval 1 millisecond) as segment_start ")


def live_model_rows(warehouse, interval: str) -> pl.DataFrame:
    """Per architecture, the model that trades: the live refit of its champion version (``models.live``, one row
    per symbol group), or, for a version without one (trained before the live refit existed), the newest fold of
    its current version (``models.current``). ``segment_start``: where the edge rule's segment begins (the first
    test bar of a fold; the first bar after the live refit's training range)."""
    if not warehouse.table_exists("models.current"):
        return pl.DataFrame()
    live = warehouse.query(f"{_MODEL_COLUMNS} from models.live where interval = ?", [interval])
    folds = warehouse.query(f"{_MODEL_COLUMNS} from models.current where interval = ?", [interval])
    folds = folds.filter(~pl.col("architecture").is_in(live["architecture"].unique().to_list()))
    if folds.height:
        folds = folds.sort(["created_at", "fold"], descending=True).unique("architecture", keep="first")
    rows = pl.concat([live, folds], how="vertical_relaxed") if live.height and folds.height else (
        live if live.height else folds)
    return rows.sort("architecture", "symbol") if rows.height else rows


@dataclasses.dataclass
class SignalsResult:
    signals: pl.DataFrame  # signals.latest rows
    skipped: list[str]


def _fresh_predictions(module, store, symbol_index: int, after_ms: int):
    """(ts_ms, proba, confidence) for the store rows of one symbol after ``after_ms`` whose window is valid."""
    rows = np.flatnonzero(store.index["symbol"].to_numpy() == store.symbols[symbol_index])
    ts = store.index["ts_ms"].to_numpy()[rows]
    features = np.asarray(store.rows[rows, : store.n_feature_channels])
    # warm-up rows are NaN after build; the label is not needed for a prediction (horizon 0)
    valid, _ = valid_window_ends(ts, ~np.isfinite(features).all(axis=1), np.ones(ts.shape[0], bool),
                                 interval_ms(store.index["interval"][0]), store.window, 0, features)
    keep = valid & (ts > after_ms)
    ends = rows[keep]
    if ends.size == 0:
        return ts[keep], np.zeros((0, 3)), np.zeros(0)
    live = dataclasses.replace(store, sample_rows=ends.astype(np.int64))
    proba, _, _, conf = predict(module, live, np.arange(ends.size))
    return ts[keep], proba, conf


def _datetime(ms) -> dt.datetime:
    """Epoch ms as the warehouse's naive UTC datetime."""
    return np.datetime64(int(ms), "ms").astype("datetime64[us]").item()


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays, NaN equal to NaN (float images)."""
    if a.shape != b.shape:
        return False
    if np.issubdtype(a.dtype, np.floating):
        return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())
    return bool((a == b).all())


def _stale_stored_images(warehouse, settings, name: str, symbol: str, series_interval: str, image_ts: np.ndarray,
                         images: np.ndarray) -> str | None:
    """Compare freshly encoded images with the ones ``encodings/<name>`` stored at the same ts (when it holds any):
    None when they agree (or none is stored), else what differs."""
    try:
        index, stored = open_images(warehouse, Path(settings.artifacts_dir), name, symbol, series_interval)
    except FileNotFoundError:
        return None  # the encoding never ran for this series: nothing to compare with
    its = index["ts_ms"].to_numpy().astype(np.int64)
    if its.size == 0 or image_ts.size == 0:
        return None
    pos = np.minimum(np.searchsorted(its, image_ts), its.size - 1)
    hit = np.flatnonzero(its[pos] == image_ts)
    if hit.size == 0:
        return None
    rows = index["row"].to_numpy().astype(np.int64)[pos[hit]]
    order = np.argsort(rows, kind="stable")  # read the memmap in file order
    kept = np.empty((rows.size, *stored.shape[1:]), dtype=stored.dtype)
    kept[order] = stored[rows[order]]
    for i in range(rows.size):
        if not _same_pixels(kept[i], images[hit[i]]):
            return (f"the {name} image encoded now at {np.datetime64(int(image_ts[hit[i]]), 'ms')} differs from "
                    f"the stored one (row {int(rows[i])}): the candles or the encoder changed since "
                    f"encodings/{name} ran; rematerialize it (and retrain) before trusting this model")
    return None


def _fresh_image_predictions(module_of, cfg: dict, warehouse, settings, symbol: str, interval: str,
                             grid: np.ndarray, after_ms: int):
    """(ts_ms, proba, confidence, reason) of the bars of ``grid`` after ``after_ms`` that have an image, each image
    encoded now from the warehouse by the encoding's own code (:func:`pipeline.encodings.build.series_images`),
    checked against the stored image of the same ts, scaled and given its symbol plane by an ImageStore as in
    training. ``reason`` says why the symbol gets no signal (else None)."""
    name = cfg["encoding"]
    s = spec(name)
    step = interval_ms(interval)
    bars = grid[grid > after_ms]
    none = (np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0))
    if bars.size == 0:
        return (*none, None)
    if s.source == "orderbook":
        series_interval = SNAPSHOT_INTERVAL
        # the snapshots taken during the new bars, and the history - 1 before them (the windows' look-back)
        src_ts, src = load_snapshots(warehouse, symbol, since=_datetime(bars[0]), before=s.history - 1)
        all_ends = np.arange(s.history - 1, src_ts.shape[0])  # as build_encoding: consecutive stored snapshots
        of_bar = bar_images(bars, src_ts[all_ends], step, snapshots=True)
        if of_bar[-1] < 0:
            newest = np.datetime64(int(src_ts[-1]), "ms") if src_ts.size else "none"
            return (*none, f"no order-book snapshot window for the newest candle {np.datetime64(int(bars[-1]), 'ms')}"
                           f" ({src_ts.shape[0]} snapshots stored, newest {newest}; a heatmap needs {s.history} "
                           "ending in that bar)")
        has = of_bar >= 0
        bar_ts, ends = bars[has], all_ends[of_bar[has]]
    else:
        series_interval = interval
        src_ts, src = load_candle_arrays(warehouse, symbol, interval, since=_datetime(bars[0] - (s.history - 1) * step))
        ends = contiguous_window_ends(src_ts, step, s.history)
        ends = ends[src_ts[ends] > after_ms]
        bar_ts = src_ts[ends]
    if ends.size == 0:
        return (*none, None)
    series = series_images(s, symbol, series_interval, src_ts, src, ends)
    scaling = IndicatorScaling.from_config(cfg.get("row_scaling"))
    probas, confs = [], []
    for i in range(0, ends.size, CHUNK):
        part = slice(i, min(ends.size, i + CHUNK))
        images = np.asarray(series.encode(part)).astype(s.dtype)  # what write_encoding stores
        stale = _stale_stored_images(warehouse, settings, name, symbol, series_interval, series.ts_ms[part], images)
        if stale:
            return (*none, stale)
        store = inference_store(name, {symbol: images}, list(cfg["symbols"]), scaling)
        if list(store.input_shape) != list(cfg["input_shape"]):
            return (*none, f"the {name} images now give model input {list(store.input_shape)}, the artifact was "
                           f"trained on {cfg['input_shape']}: retrain")
        proba, _, _, conf = predict(module_of(), store, np.arange(store.sample_rows.shape[0]))
        probas.append(proba)
        confs.append(conf)
    return bar_ts, np.concatenate(probas), np.concatenate(confs), None


def _signal_row(m: dict, rule, symbol: str, interval: str, grid: np.ndarray, mine: pl.DataFrame,
                new_ts: np.ndarray, new_p: np.ndarray, new_conf: np.ndarray, skipped: list[str]) -> dict:
    """The signals.latest row of one model and symbol: the fold's edge rule over its segment ``grid`` (stored
    out-of-sample predictions ``mine``, then the fresh ones), read at the newest bar."""
    proba = np.full((grid.size, 3), np.nan)
    conf = np.full(grid.size, np.nan)
    for ts_ms, p, c in ((mine["ts_ms"].to_numpy(), mine.select(PROBA_COLUMNS).to_numpy(),
                         mine["confidence"].cast(pl.Float64).fill_null(np.nan).to_numpy()),
                        (new_ts, new_p, new_conf)):
        idx = np.searchsorted(grid, ts_ms)
        ok = (idx < grid.size) & (grid[np.minimum(idx, grid.size - 1)] == ts_ms)
        proba[idx[ok]] = p[ok]
        conf[idx[ok]] = c[ok]
    target = float(edge_targets(proba, rule)[-1])
    last = proba[-1]
    known = bool(np.isfinite(last).all())
    if not known:
        what = "image" if m.get("encoding") else "window"
        skipped.append(f"{m['model_id']} / {symbol}: the newest candle has no valid {what} "
                       "(warm-up or a missing bar): flat")
    return {
        "symbol": symbol, "architecture": m["architecture"], "interval": interval,
        "ts": np.datetime64(int(grid[-1]), "ms").astype("datetime64[us]").item(),
        "signal": int(np.sign(target)), "size": abs(target),
        "confidence": float(conf[-1]) if math.isfinite(conf[-1]) else None,
        "p_down": float(last[0]) if known else None, "p_flat": float(last[1]) if known else None,
        "p_up": float(last[2]) if known else None,
        "expected_move": float(expected_move(last[None, :], rule.class_returns)[0]) if known else None,
        "model_id": m["model_id"], "version": m.get("version"),
        "train_start": m.get("train_start"), "train_end": m.get("train_end"),
    }


def _model_signals(m: dict, warehouse, settings, interval: str, skipped: list[str]) -> list[dict]:
    """signals.latest rows of one model (a registry row of :func:`live_model_rows`); reasons for symbols without a
    signal go to ``skipped``. An artifact file that is not the one trained raises ArtifactError naming it."""
    out: list[dict] = []
    path = Path(m["artifact_path"])
    if not (path / "config.json").exists():
        skipped.append(f"{m['model_id']}: no artifact at {path} (retrain {m['architecture']})")
        return []
    verify_artifact(path, m.get("artifact_sha256"))  # every file is the one trained, else ArtifactError naming it
    cfg = json.loads((path / "config.json").read_text())
    m = {**m, "encoding": cfg.get("encoding")}
    rule = edge_rule_of(m["metrics"], m["model_id"])
    symbols = list(cfg["symbols"])
    for symbol in settings.symbols:
        if symbol not in symbols:
            what = f"no {cfg['encoding']} image of it" if cfg.get("encoding") else "it was not configured"
            skipped.append(f"{m['model_id']} / {symbol}: not among the symbols this fold trained on ({what} "
                           "then): no signal until it is retrained")
    stored = warehouse.query(
        "select symbol, epoch_ms(ts) as ts_ms, p_down, p_flat, p_up, confidence from predictions.oos "
        "where model_id = ? order by ts", [m["model_id"]])
    test_start_ms = int(np.datetime64(m["segment_start"], "ms").astype(np.int64))
    if cfg.get("encoding"):
        modules = []

        def module_of():  # loaded once, only when some symbol has a new image to predict
            if not modules:
                modules.append(load_artifact(path))
            return modules[0]
    else:
        module = load_artifact(path)
        series = [load_series(warehouse, s, interval, cfg["horizon"], columns=cfg["feature_columns"])
                  for s in symbols]
        # features whose rows carry warm-up NULLs are NaN in the store: set them apart from training's store
        for s in series:
            s.features[s.is_warmup] = np.nan
        store = build_window_store(series, Path(settings.artifacts_dir) / "live", cfg["window"], cfg["horizon"],
                                   columns=cfg["feature_columns"])
    for k, symbol in enumerate(symbols):
        if symbol not in settings.symbols:
            continue
        mine = stored.filter(pl.col("symbol") == symbol)
        last_ms = int(mine["ts_ms"].max()) if mine.height else test_start_ms - 1
        if cfg.get("encoding"):
            grid = load_candle_arrays(warehouse, symbol, interval, since=_datetime(test_start_ms))[0]
        else:
            grid = series[k].ts_ms[series[k].ts_ms >= test_start_ms]
        if grid.size == 0:
            skipped.append(f"{m['model_id']} / {symbol}: no candle since the fold's first test bar")
            continue
        if cfg.get("encoding"):
            new_ts, new_p, new_conf, reason = _fresh_image_predictions(
                module_of, cfg, warehouse, settings, symbol, interval, grid, last_ms)
            if reason:
                skipped.append(f"{m['model_id']} / {symbol}: {reason}: no signal")
                continue
        else:
            new_ts, new_p, new_conf = _fresh_predictions(module, store, k, last_ms)
        out.append(_signal_row(m, rule, symbol, interval, grid, mine, new_ts, new_p, new_conf, skipped))
    return out


def latest_signals(warehouse, settings) -> SignalsResult:
    """The newest candle's signal of every architecture and symbol (see the module docstring)."""
    interval = settings.intervals[0]
    models = live_model_rows(warehouse, interval)
    if models.height == 0:
        return SignalsResult(pl.DataFrame(), ["no trained model: materialize the models/* assets first"])
    out, skipped = [], []
    for m in models.iter_rows(named=True):
        try:
            out.extend(_model_signals(m, warehouse, settings, interval, skipped))
        except Exception as exc:  # noqa: BLE001 - one unreadable model never stops the others' signals
            skipped.append(f"{m['model_id']}: its artifact at {m['artifact_path']} cannot be used "
                           f"({type(exc).__name__}: {exc}); no signal for {m['architecture']}")
    frame = pl.DataFrame(out) if out else pl.DataFrame()
    if frame.height:
        closes = warehouse.query(
            "select symbol, ts, close as price from raw.candles where interval = ?", [interval])
        frame = frame.join(closes, on=["symbol", "ts"], how="left")
    return SignalsResult(frame, skipped)


def store_signals(warehouse, signals: pl.DataFrame) -> int:
    """Replace ``signals.latest`` with these rows (one per symbol and architecture)."""
    from pipeline.warehouse import Replacement

    if signals.height == 0:
        return 0
    warehouse.replace_tables([Replacement(SIGNALS_TABLE, signals, "true")])
    return signals.height


def book_paper_trades(warehouse, settings, signals: pl.DataFrame) -> pl.DataFrame:
    """New ``signals.paper_ledger`` rows for ``signals`` (see the module docstring), written in one transaction."""
    from pipeline.warehouse import Replacement

    if signals.height == 0:
        return pl.DataFrame()
    ledger = warehouse.query(f"select * from {LEDGER_TABLE}") if warehouse.table_exists(LEDGER_TABLE) else None
    risk = RiskRules()
    new_rows, replacements = [], []
    for s in signals.sort("architecture", "symbol").iter_rows(named=True):
        key = (s["architecture"], s["symbol"], s["interval"])
        prev = None
        if ledger is not None and ledger.height:
            mine = ledger.filter((pl.col("architecture") == key[0]) & (pl.col("symbol") == key[1])
                                 & (pl.col("interval") == key[2])).sort("ts")
            prev = mine.row(-1, named=True) if mine.height else None
        if prev is not None and prev["ts"] >= s["ts"]:
            continue  # this candle is booked already
        after = prev["ts"] if prev is not None else s["ts"]
        candles = warehouse.query(
            "select ts, close, volume from raw.candles where symbol = ? and interval = ? and ts >= ? and ts <= ? "
            "order by ts", [key[1], key[2], after, s["ts"]])
        if prev is not None:
            candles = candles.filter(pl.col("ts") > prev["ts"])
        if candles.height == 0 or candles["ts"][-1] != s["ts"]:
            raise ValueError(f"raw.candles has no {key[1]} {key[2]} candle at {s['ts']}, the signal's bar: "
                             "signals and raw.candles disagree")
        costs = CostModel.from_settings(settings, key[1])
        if prev is None:
            cash, qty, last_px, target = INITIAL_EQUITY, 0.0, float(candles["close"][0]), 0.0
        else:
            qty = float(prev["position"])
            last_px = float(prev["price"])
            cash = float(prev["equity"]) - qty * last_px
            target = float(prev["target"])
        rows = []
        closes, volumes = candles["close"].to_numpy(), candles["volume"].to_numpy()
        for i, ts in enumerate(candles["ts"]):
            px = float(closes[i])
            equity_before = cash + qty * last_px
            traded = fees = 0.0
            signal = None
            if i == candles.height - 1:
                signal = int(s["signal"])
                target = signal * float(s["size"])
                equity_now = cash + qty * px
                delta = target * equity_now / px - qty
                if abs(delta) * px > 1e-9 * max(equity_now, 1.0):
                    cash, qty, traded, _, fees, _ = execute_order(
                        cash, qty, delta, px, float(volumes[i]), costs.fee_rate, costs.slippage, costs.impact_coef,
                        risk.max_leverage)
            equity = cash + qty * px
            rows.append({"architecture": key[0], "symbol": key[1], "interval": key[2], "ts": ts, "price": px,
                         "signal": signal, "target": target, "position": qty, "traded": float(traded),
                         "fees": float(fees), "pnl": equity - equity_before, "equity": equity,
                         "model_id": s["model_id"]})
            last_px = px
        frame = pl.DataFrame(rows, schema_overrides={"signal": pl.Int32})
        new_rows.append(frame)
        replacements.append(Replacement(LEDGER_TABLE, frame,
                                        "architecture = ? and symbol = ? and interval = ? and ts >= ?",
                                        [*key, frame["ts"][0]]))
    if replacements:
        warehouse.replace_tables(replacements)
    return pl.concat(new_rows) if new_rows else pl.DataFrame()


def ledger_summary(warehouse) -> pl.DataFrame:
    """Per architecture and symbol: bookings, first and last bar, equity, return, fees, trades (from the ledger)."""
    if not warehouse.table_exists(LEDGER_TABLE):
        return pl.DataFrame()
    return warehouse.query(
        f"select architecture, symbol, count(*) filter (where signal is not null) as bookings, "
        f"min(ts) as first_ts, max(ts) as last_ts, arg_max(equity, ts) as equity, "
        f"arg_max(equity, ts) / {INITIAL_EQUITY} - 1 as paper_return, sum(fees) as fees, "
        f"count(*) filter (where traded <> 0) as trades from {LEDGER_TABLE} group by all order by all")
