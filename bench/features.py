"""Feature build speed: dbt builds of features.candle_features + features.labels, and TA-Lib.

Prints one JSON line:
* real_1h: full `dbt build` (models + data tests) of the three real 1h files (~126k candles);
* synthetic_1m: full `dbt build` of one year of 1m synthetic candles (~525k), then a daily
  incremental refresh: append one day and run, for the month-to-date window the 00:15 refresh of
  the monthly partition holding that day passes (assets/partitions.py), the dbt invocation the
  Dagster partition run makes (`dbt build --select fqn:*`: the 4 staging views, both models and
  all 11 data tests, window in CONVTRADE_FEATURES_START/_END, JSON log format, no JSON
  artifacts), then the same as a models-only `dbt run`; and, when dagster imports, the whole
  Dagster materialization of that partition (dbt assets and the blocking GX check, in-process
  executor, ephemeral instance: Dagster's own run overhead included);
* *_wall_s is the whole dbt process (start-up and imports included), *_models_s the time dbt
  spent in the two feature models (from dbt's JSON log);
* compute_s: compute_candle_features on the 525k candles in-process; talib_s: the
  TA-Lib-computable part of the same indicator set (EMA x7, RSI, MACD, BBANDS, TRANGE, ATR, OBV,
  STOCHF, ADX, +DI, -DI on 4h and 1d closes too); ratio = ours / TA-Lib.
Each dbt timing follows one `dbt parse` on the same warehouse path (the profile path is part of dbt's
partial-parse state, constant in production). Targets: full 525k build < 20 s, daily refresh < 5 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Daily partitions start at CONVTRADE_START; the synthetic year is 2024 (set before assets import).
os.environ.setdefault("CONVTRADE_START", "2024-01-01")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import talib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.features.candle_features import compute_candle_features  # noqa: E402
from pipeline.dbt_runner.invoke import run_dbt  # noqa: E402
from pipeline.market.schemas import CANDLE_SCHEMA, conform  # noqa: E402
from pipeline.warehouse import Warehouse  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
MODELS = ("candle_features", "labels")
# What dagster-dbt passes when a run selects every dbt asset of the project (a daily partition run).
ASSET_SELECTION = ["--select", "fqn:*"]


def real_candles() -> pl.DataFrame | None:
    frames = []
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        path = SHARED / f"bybit_{symbol}_60.csv.gz"
        if not path.exists():
            return None
        frame = pl.read_csv(path).with_columns(
            symbol=pl.lit(symbol), interval=pl.lit("60"), source=pl.lit("files"),
            ts=pl.from_epoch("ts", time_unit="ms").cast(pl.Datetime("us")),
        )
        if "turnover" not in frame.columns:
            frame = frame.with_columns(turnover=pl.lit(None, pl.Float64))
        frames.append(conform(frame, CANDLE_SCHEMA, str(path)))
    return pl.concat(frames)


def synthetic_minutes(days: int) -> pl.DataFrame:
    start = dt.datetime(2024, 1, 1)
    try:
        from pipeline.market.synthetic import SyntheticSource

        source = SyntheticSource(symbols=("BTCUSDT",), origin=start.date(), seed=7)
        return source.candles("BTCUSDT", "1", start, start + dt.timedelta(days=days))
    except ImportError:  # before the synthetic source lands: a seeded random walk
        rng = np.random.default_rng(7)
        n = days * 1440
        close = 40_000 * np.exp(np.cumsum(rng.normal(0, 6e-4, n)))
        open_ = np.concatenate([[40_000.0], close[:-1]])
        wick = np.abs(rng.normal(0, 3e-4, (2, n)))
        return pl.DataFrame({
            "symbol": "BTCUSDT", "interval": "1",
            "ts": pl.datetime_range(start, start + dt.timedelta(minutes=n - 1), "1m", eager=True),
            "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]), "close": close,
            "volume": rng.lognormal(2, 0.7, n), "turnover": None, "source": "random_walk",
        }).pipe(conform, CANDLE_SCHEMA, "random walk")


def models_seconds(stdout: str) -> float:
    """Seconds dbt spent in the feature models, from its JSON log (LogModelResult events)."""
    total = 0.0
    for line in stdout.splitlines():
        event = json.loads(line)
        if event["info"]["name"] == "LogModelResult" and event["data"]["node_info"]["node_name"] in MODELS:
            total += event["data"]["execution_time"]
    return round(total, 3)


def timed_dbt(args: list[str], path: Path, start=None, end=None) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = run_dbt(args, path, start, end, extra_env={"DBT_LOG_FORMAT": "json"})  # as dagster-dbt runs it
    return round(time.perf_counter() - t0, 3), models_seconds(result.stdout)


def dagster_partition_seconds(path: Path, day: dt.datetime) -> float | None:
    """Wall time of `dagster.materialize` of the dbt assets + GX check for the monthly partition holding ``day``."""
    try:
        import dagster as dg

        from assets import features as feature_assets
        from assets.definitions import all_resources
        from assets.partitions import month_key
        from assets.resources import SettingsResource
    except ImportError:
        return None
    resources = all_resources(SettingsResource(data_dir=str(Path(path).parent)))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Dagster's console log: stdout carries only the JSON line
        result = dg.materialize(
            [feature_assets.feature_models, feature_assets.candle_features_expectations],
            partition_key=month_key(day.date()),
            resources=resources,
            raise_on_error=True,
        )
    wall = time.perf_counter() - t0
    assert result.success
    return round(wall, 3)


def talib_seconds(candles: pl.DataFrame) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _, series in candles.group_by(["symbol", "interval"], maintain_order=True):
            o, h, low, c, v = (series[k].to_numpy().astype(float) for k in ("open", "high", "low", "close", "volume"))
            for n in (9, 12, 20, 21, 26, 50, 200):
                talib.EMA(c, n)
            talib.RSI(c, 14)
            talib.MACD(c, 12, 26, 9)
            talib.BBANDS(c, 20, 2.0, 2.0, 0)
            talib.TRANGE(h, low, c)
            talib.ATR(h, low, c, 14)
            talib.OBV(c, v)
            talib.STOCHF(h, low, c, 14, 3, 0)
            talib.ADX(h, low, c, 14)
            talib.PLUS_DI(h, low, c, 14)
            talib.MINUS_DI(h, low, c, 14)
            for every in ("4h", "1d"):  # the coarse-timeframe part
                coarse = series.group_by(pl.col("ts").dt.truncate(every), maintain_order=True).agg(pl.col("close").last())
                cc = coarse["close"].to_numpy().astype(float)
                talib.RSI(cc, 14)
                talib.EMA(cc, 21)
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def compute_seconds(candles: pl.DataFrame) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        compute_candle_features(candles)
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def main() -> None:
    figures: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        real = real_candles()
        if real is not None:
            wh = Warehouse(Path(tmp) / "real.duckdb")
            wh.ensure_schema()
            wh.replace_rows("raw.candles", real, "true")
            run_dbt(["parse", "--quiet"], wh.path)
            wall, models = timed_dbt(["build"], wh.path)
            figures["real_1h"] = {"candles": real.height, "full_build_wall_s": wall, "full_build_models_s": models}

        minutes = synthetic_minutes(366)
        last_day = minutes["ts"].max().replace(hour=0, minute=0)
        history = minutes.filter(pl.col("ts") < last_day)
        wh = Warehouse(Path(tmp) / "minutes.duckdb")
        wh.ensure_schema()
        wh.replace_rows("raw.candles", history, "true")
        run_dbt(["parse", "--quiet"], wh.path)
        full_wall, full_models = timed_dbt(["build"], wh.path)
        day = minutes.filter(pl.col("ts") >= last_day)
        end = last_day + dt.timedelta(days=1)
        wh.replace_rows("raw.candles", day, "ts >= ? and ts < ?", [last_day, end])
        month = last_day.replace(day=1)  # the refresh rewrites the month that holds the new day
        inc_wall, inc_models = timed_dbt(["build", *ASSET_SELECTION], wh.path, month, end)
        run_wall, run_models = timed_dbt(["run", *ASSET_SELECTION], wh.path, month, end)
        dagster_wall = dagster_partition_seconds(wh.path, last_day)
        figures["synthetic_1m"] = {
            "candles": history.height,
            "full_build_wall_s": full_wall,
            "full_build_models_s": full_models,
            "daily_refresh_build_wall_s": inc_wall,
            "daily_refresh_build_models_s": inc_models,
            "daily_refresh_run_wall_s": run_wall,
            "daily_refresh_models_s": run_models,
            "daily_refresh_dagster_materialize_wall_s": dagster_wall,
        }
        compute = compute_seconds(minutes)
        talib_s = talib_seconds(minutes)
        figures["synthetic_1m"].update(
            {"compute_s": compute, "talib_s": talib_s, "ratio_compute_vs_talib": round(compute / talib_s, 2),
             "ratio_full_build_vs_talib": round(full_wall / talib_s, 1)}
        )
        figures["targets_met"] = {"full_525k_under_20s": full_wall < 20, "daily_refresh_under_5s": inc_wall < 5}
    figures["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
