"""A simulated month at the level of the drift report and the sensor (no dbt, no training; seconds, not minutes).

20 days of history, then 30 days added one at a time. On day 20 of the month a
regime change is planted in AAAUSDT (volatility x3 and a shift of the mean);
BBBUSDT never changes. Every day: the new day's feature rows arrive, the
"nightly retrain" moves the live model's training range to end before the
current window (as a retrain on the newest fold does), ``monitoring/drift``'s
work runs (``compute_drift`` + ``store_drift``) and the drift sensor's decision
(:func:`assets.automation.drift_decision`, the clock at that tick) is taken
twice a day with the cursor carried over. Drift retrains happen from day 20
(or 21) on, for AAAUSDT only, never before, one per report, never two within
the 24 h cool-down. The full simulated month of the issue (synthetic regime
change, daily/nightly schedules through dbt and training) is
test_replay_through_schedules.py; this one checks the sensor's logic in seconds.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import polars as pl

from assets.automation import drift_decision
from pipeline.config import Settings
from pipeline.monitoring.drift import DriftThresholds, compute_drift, latest_verdicts, store_drift
from pipeline.warehouse import Warehouse

SYMBOLS = ("AAAUSDT", "BBBUSDT")
COLUMNS = ["log_ret_1", "rsi_14", "atr_pct_14"]
START = dt.datetime(2025, 3, 1)
HISTORY_DAYS, MONTH_DAYS, CHANGE_DAY = 20, 30, 20
RECENT = 96  # current window: four days (5 PSI bins: the noise floor of 10 bins on 72 bars is ~0.15)


def _day_rows(rng, day: int) -> pl.DataFrame:
    ts = [START + dt.timedelta(days=day, hours=h) for h in range(24)]
    frames = []
    for symbol in SYMBOLS:
        x = rng.normal(0, 1, (24, len(COLUMNS)))
        if symbol == "AAAUSDT" and day >= HISTORY_DAYS + CHANGE_DAY - 1:
            x = 3 * x + 1.0
        frames.append(pl.DataFrame({"symbol": symbol, "interval": "60", "ts": ts, "is_warmup": False})
                      .with_columns([pl.Series(c, x[:, k]) for k, c in enumerate(COLUMNS)]))
    return pl.concat(frames)


def test_drift_retrains_start_after_the_regime_change_and_respect_the_cool_down(tmp_path):
    rng = np.random.default_rng(3)
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    with duckdb.connect(str(wh.path)) as con:
        history = pl.concat([_day_rows(rng, d) for d in range(HISTORY_DAYS)])
        con.register("f", history)
        con.execute("create table features.candle_features as select * from f")
        con.execute("create table features.labels (symbol varchar, interval varchar, ts timestamp, horizon integer, "
                    "direction integer, fwd_return double, fwd_volatility double)")
    settings = Settings(data_dir=tmp_path, symbols=SYMBOLS, drift_recent_bars=RECENT, drift_psi_bins=5)
    thresholds = DriftThresholds.from_settings(settings)
    cursor, retrains = None, []
    for day in range(1, MONTH_DAYS + 1):
        absolute = HISTORY_DAYS + day - 1
        with duckdb.connect(str(wh.path)) as con:
            con.register("f", _day_rows(rng, absolute))
            con.execute("insert into features.candle_features select * from f")
        end = START + dt.timedelta(days=absolute + 1)  # the newest bar closes at the end of this day
        train_end = end - dt.timedelta(hours=RECENT + 1)
        registry = pl.DataFrame({"model_id": ["tcn-fold5"], "architecture": ["tcn"], "symbol": [",".join(SYMBOLS)],
                                 "interval": ["60"], "fold": [5], "train_start": [START], "train_end": [train_end],
                                 "metrics": [json.dumps({"oos_accuracy": 0.4, "n_test": 100})], "trigger": ["schedule"]})
        wh.replace_rows("models.registry", registry, "true")
        store_drift(wh, compute_drift(wh, settings, thresholds, columns=COLUMNS))
        for hours in (1, 13):  # the sensor ticks twice a day: the second tick sees the same report
            tick = (end + dt.timedelta(hours=hours)).replace(tzinfo=dt.timezone.utc).timestamp()
            result = drift_decision(latest_verdicts(wh, thresholds), cursor, tick, thresholds.cooldown_hours)
            cursor = result.cursor or cursor
            for request in result.run_requests or []:
                assert hours == 1, f"day {day}: a second run for one report"
                retrains.append((day, tick, request.run_key))
                assert request.tags["trigger"] == "drift" and "BBBUSDT" not in request.run_key
    days = [d for d, _, _ in retrains]
    assert days and min(days) >= CHANGE_DAY, retrains  # none before the regime change
    assert min(days) <= CHANGE_DAY + 1  # detected within a day of the change
    ticks = [t for _, t, _ in retrains]
    assert all(b - a >= thresholds.cooldown_hours * 3600 for a, b in zip(ticks, ticks[1:]))  # the cool-down
    assert len({k for _, _, k in retrains}) == len(retrains)  # one run per report
    rows = wh.query("select count(distinct \"at\") as n from monitoring.drift")["n"][0]
    assert rows == MONTH_DAYS  # one report per day kept
