"""Dagster: the Definitions load, and the market assets materialize into a temporary DuckDB."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from assets.checks import raw_candles_expectations
from assets.market import raw_candles, raw_funding, raw_open_interest, raw_orderbook
from assets.partitions import market_partitions
from assets.definitions import defs
from assets.resources import SettingsResource, default_resources
from pipeline.warehouse import Warehouse

MARKET = [raw_candles, raw_funding, raw_open_interest, raw_orderbook]


@pytest.fixture
def resources(tmp_path):
    return default_resources(SettingsResource(data_dir=str(tmp_path), source="synthetic", symbols="BTCUSDT,ETHUSDT"))


@pytest.fixture
def partition() -> str:
    return market_partitions.get_partition_keys()[1]  # a whole month


def days_of(*keys: str) -> int:
    """Days in the monthly partitions ``keys`` (consecutive)."""
    first = market_partitions.time_window_for_partition_key(keys[0]).start
    return (market_partitions.time_window_for_partition_key(keys[-1]).end - first).days


def epoch_ms(key: str) -> int:
    return int(dt.datetime.fromisoformat(key).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw/candles", "raw/funding", "raw/open_interest", "raw/orderbook"} <= keys
    daily = defs.resolve_job_def("daily_refresh")
    assert daily.partitions_def == market_partitions
    selected = {k.to_user_string() for k in daily.asset_layer.selected_asset_keys}
    assert {"raw/candles", "features/candle_features", "features/labels"} <= selected
    assert "backtest/baselines" not in selected
    nightly = defs.resolve_job_def("nightly_retrain")
    nightly_keys = {k.to_user_string() for k in nightly.asset_layer.selected_asset_keys}
    assert "backtest/baselines" in nightly_keys and not nightly_keys & selected  # no partitioned asset nightly
    schedule_names = {s.name for s in defs.schedules}
    assert {"daily_refresh_schedule", "nightly_retrain_schedule"} <= schedule_names


def test_daily_schedule_requests_the_month_that_holds_yesterday():
    from assets.partitions import HISTORY_START

    [schedule] = [s for s in defs.schedules if s.name == "daily_refresh_schedule"]
    assert schedule.cron_schedule == "15 0 * * *" and schedule.execution_timezone == "UTC"
    first = dt.date.fromisoformat(market_partitions.get_partition_keys()[1])  # a month after the first

    def tick(day: dt.date):
        when = dt.datetime(day.year, day.month, day.day, 0, 15, tzinfo=dt.timezone.utc)
        return schedule(dg.build_schedule_context(scheduled_execution_time=when))

    # On the 1st, yesterday closed the previous month: that month is refreshed (and so finished).
    request = tick(first)
    previous = (first - dt.timedelta(days=1)).replace(day=1).isoformat()
    assert request.partition_key == previous and request.run_key == f"{previous}@{first - dt.timedelta(days=1)}"
    request = tick(first + dt.timedelta(days=1))
    assert request.partition_key == first.isoformat() and request.run_key == f"{first.isoformat()}@{first}"
    before = tick(HISTORY_START)
    assert isinstance(before, dg.SkipReason) and "before CONVTRADE_START" in before.skip_message


def test_materialize_partition_is_idempotent(resources, partition):
    wh = resources["warehouse"].warehouse()
    result = dg.materialize(MARKET + [raw_candles_expectations], resources=resources, partition_key=partition)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    bars = 2 * 24 * days_of(partition)
    assert check.passed and check.metadata["rows_checked"].value == bars
    counts = wh.query("select count(*) as n from raw.candles")["n"][0]
    first = wh.query("select * exclude (ingested_at) from raw.candles order by all")
    assert counts == bars
    meta = result.asset_materializations_for_node("raw__candles")[0].metadata
    assert meta["rows_written"].value == bars and meta["missing_bars"].value == 0
    assert dt.datetime.fromisoformat(meta["window_start"].value) == dt.datetime.fromisoformat(partition)
    again = dg.materialize(MARKET, resources=resources, partition_key=partition)
    assert again.success
    assert wh.query("select * exclude (ingested_at) from raw.candles order by all").equals(first)
    assert wh.query("select count(*) as n from raw.orderbook")["n"][0] == bars


def test_backfill_range_runs_as_one_run(resources):
    keys = market_partitions.get_partition_keys()[:2]
    result = dg.materialize(
        [raw_candles],
        resources=resources,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    assert result.success
    assert [m.partition for m in result.asset_materializations_for_node("raw__candles")] == keys
    wh = resources["warehouse"].warehouse()
    days = wh.query("select count(distinct ts::date) as d, count(*) as n from raw.candles")
    assert days["d"][0] == days_of(*keys) and days["n"][0] == days_of(*keys) * 2 * 24


def test_check_fails_on_bad_rows_in_the_warehouse(resources, partition):
    assert dg.materialize([raw_candles], resources=resources, partition_key=partition).success
    wh = resources["warehouse"].warehouse()
    day = dt.datetime.fromisoformat(partition)
    with wh.connect() as con:
        con.execute(
            "update raw.candles set high = low - 1 where symbol = 'ETHUSDT' and ts = ?",
            [day + dt.timedelta(hours=5)],
        )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_candles, raw_candles_expectations],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.checks(raw_candles_expectations),
            raise_on_error=False,
        )
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    failures = check.metadata["failures"].value
    assert any(f["columns"] == "high, open" and f["examples"][0]["symbol"] == "ETHUSDT"
               and f["examples"][0]["ts"] == str(day + dt.timedelta(hours=5)) for f in failures)


def test_bad_source_fails_the_run_and_keeps_the_warehouse(resources, partition, tmp_path):
    assert dg.materialize([raw_candles], resources=resources, partition_key=partition).success
    wh = resources["warehouse"].warehouse()
    before = wh.query("select * exclude (ingested_at) from raw.candles order by all")
    exports = tmp_path / "exports"
    exports.mkdir()
    rows = [f"{epoch_ms(partition) + h * 3_600_000},100,101,99,100,5" for h in range(24)]
    rows[7] = rows[7].replace(",101,", ",oops,")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        (exports / f"bybit_{symbol}_60.csv").write_text("ts,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    broken = dict(
        resources,
        settings=SettingsResource(data_dir=str(tmp_path), symbols="BTCUSDT,ETHUSDT", source="files", files_dir=str(exports)),
    )
    result = dg.materialize([raw_candles], resources=broken, partition_key=partition, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.event_specific_data.error)
    assert "bybit_BTCUSDT_60.csv" in message and "line 9" in message
    assert wh.query("select * exclude (ingested_at) from raw.candles order by all").equals(before)


def test_dbt_is_found_without_the_virtualenv_on_path(monkeypatch):
    """`.venv/bin/dagster dev` from any shell: the dbt resource and the dev-time manifest step use the dbt of
    this interpreter, never a `dbt` looked up on PATH."""
    import subprocess
    import sys

    from assets.features import InterpreterDbtPreparer, dbt_project, dbt_resource

    monkeypatch.setenv("PATH", "/nonexistent")
    resource = dbt_resource()  # validates that its executable exists (shutil.which) while PATH is useless
    executable = Path(resource.dbt_executable)
    assert executable.is_absolute()
    assert executable.read_text().splitlines()[0] == f"#!{sys.executable}"
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/nonexistent"})
    assert done.returncode == 0 and "1." in done.stdout + done.stderr
    assert isinstance(dbt_project.preparer, InterpreterDbtPreparer)


def _export(folder, symbol: str, stamps: list[int]) -> None:
    lines = ["ts,open,high,low,close,volume"] + [
        f"{ms},{100 + i % 7},{102 + i % 7},{99 + i % 7},{101 + i % 7},{1 + i % 3}" for i, ms in enumerate(stamps)
    ]
    (folder / f"bybit_{symbol}_60.csv").write_text("\n".join(lines) + "\n")


def test_history_run_reports_coverage_once_and_skips_absent_datasets(tmp_path):
    """Two months through the files source: BTC opens late with a 1-bar and an 11-bar hole, ETH's export
    ends after day 2. The ingest metadata and the GX check count the same 12 missing bars (nothing before
    BTC's first or after ETH's last candle); one warning line names ETH's empty range, and each month's
    partition names its part of it; funding, open interest and order book have no file and are skipped
    with the reason in their metadata."""
    import logging

    keys = market_partitions.get_partition_keys()[:2]
    days = days_of(*keys)
    stamps = [epoch_ms(keys[0]) + h * 3_600_000 for h in range(days * 24)]
    btc = stamps[5:]
    btc = [ms for i, ms in enumerate(btc) if i != 10 and not 30 <= i < 41]
    exports = tmp_path / "exports"
    exports.mkdir()
    _export(exports, "BTCUSDT", btc)
    _export(exports, "ETHUSDT", stamps[: 2 * 24])
    resources = default_resources(
        SettingsResource(data_dir=str(tmp_path), source="files", symbols="BTCUSDT,ETHUSDT", files_dir=str(exports))
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            MARKET + [raw_candles_expectations],
            resources=resources,
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        assert result.success
        logs = instance.all_logs(result.run_id)
    meta = result.asset_materializations_for_node("raw__candles")[0].metadata
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert meta["missing_bars"].value == check.metadata["missing_bars"].value == 12
    assert meta["rows_written"].value == len(btc) + 48 == check.metadata["rows_checked"].value
    day3 = dt.date.fromisoformat(keys[0]) + dt.timedelta(days=2)
    end = dt.date.fromisoformat(keys[0]) + dt.timedelta(days=days)
    assert meta["empty_days"].value == days - 2 and str(day3) in meta["empty_ranges"].value
    # The flag on the partitions themselves: each month names ETH and its own empty days.
    by_month = {m.partition: m.metadata for m in result.asset_materializations_for_node("raw__candles")}
    assert sorted(by_month) == keys
    assert [by_month[k].get("no_candles") for k in keys] == [
        dg.TextMetadataValue(f"ETHUSDT 60 [{day3}, {keys[1]})"), dg.TextMetadataValue(f"ETHUSDT 60 [{keys[1]}, {end})")]
    warnings = [r.user_message for r in logs if r.level == logging.WARNING and "no candles" in r.user_message]
    assert warnings == [f"raw.candles: files returned no candles for ETHUSDT 60 [{day3}, {end}) ({days - 2} days)"]
    # Progress in the run log: the window at the start, then one line per series with its candles and days.
    messages = [r.user_message for r in logs if r.step_key == "raw__candles"]
    assert any(m.startswith(f"raw/candles: fetching [{keys[0]} 00:00:00,") and f"({days} days)" in m for m in messages)
    assert any(m.startswith(f"BTCUSDT 60: {len(btc):,} candles, {days} days") and "series 1/2" in m for m in messages)
    assert any(m.startswith("ETHUSDT 60: 48 candles, 2 days") and "series 2/2" in m for m in messages)
    assert any(r.user_message.startswith("raw.funding: skipped, files has no such data (BTCUSDT: no funding file")
               for r in logs if r.step_key == "raw__funding")
    for node in ("raw__funding", "raw__open_interest", "raw__orderbook"):
        skipped = result.asset_materializations_for_node(node)[0].metadata["skipped"].value
        assert "BTCUSDT: no " in skipped and "ETHUSDT: no " in skipped and str(exports) in skipped


def test_empty_days_are_flagged_on_their_month(tmp_path):
    """A run of one month whose days after the 1st hold no candle of ETH: that partition's metadata
    names ETH and the empty days."""
    keys = market_partitions.get_partition_keys()[:2]
    days = days_of(*keys)
    exports = tmp_path / "exports"
    exports.mkdir()
    _export(exports, "BTCUSDT", [epoch_ms(keys[0]) + h * 3_600_000 for h in range(24 * days)])
    _export(exports, "ETHUSDT", [epoch_ms(keys[0]) + h * 3_600_000 for h in range(24 * (days_of(keys[0]) + 1))])
    resources = default_resources(
        SettingsResource(data_dir=str(tmp_path), source="files", symbols="BTCUSDT,ETHUSDT", files_dir=str(exports))
    )
    result = dg.materialize([raw_candles], resources=resources, partition_key=keys[1])
    [event] = result.asset_materializations_for_node("raw__candles")
    second = dt.date.fromisoformat(keys[1]) + dt.timedelta(days=1)
    end = dt.date.fromisoformat(keys[1]) + dt.timedelta(days=days_of(keys[1]))
    assert event.partition == keys[1] and event.metadata["no_candles"].value == f"ETHUSDT 60 [{second}, {end})"
    assert event.metadata["empty_days"].value == days_of(keys[1]) - 1
    assert event.metadata["rows_written"].value == 24 * days_of(keys[1]) + 24


def test_a_cut_short_export_fails_the_asset_unless_the_run_allows_shrinking(tmp_path):
    """The raw/candles asset refuses to shrink a stored month (nothing written); `allow_shrink` in the run's
    settings (or CONVTRADE_ALLOW_SHRINK) replaces it."""
    key = market_partitions.get_partition_keys()[1]
    exports = tmp_path / "exports"
    exports.mkdir()
    hours = 24 * days_of(key)
    _export(exports, "BTCUSDT", [epoch_ms(key) + h * 3_600_000 for h in range(hours)])

    def run(allow_shrink: bool = False):
        settings = SettingsResource(data_dir=str(tmp_path), source="files", symbols="BTCUSDT",
                                    files_dir=str(exports), allow_shrink=allow_shrink)
        return dg.materialize([raw_candles], resources=default_resources(settings), partition_key=key,
                              raise_on_error=False)

    assert run().success
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    stored = wh.query("select * from raw.candles order by all")
    _export(exports, "BTCUSDT", [epoch_ms(key) + h * 3_600_000 for h in range(hours // 2)])
    refused = run()
    assert not refused.success
    message = str(next(e for e in refused.all_events if e.is_step_failure).event_specific_data.error)
    assert f"BTCUSDT 60 [{key} 00:00:00" in message and "CONVTRADE_ALLOW_SHRINK" in message
    assert wh.query("select * from raw.candles order by all").equals(stored)  # ingested_at included
    assert run(allow_shrink=True).success
    assert wh.query("select count(*) as n from raw.candles")["n"][0] == hours // 2


def test_partition_windows_start_at_the_history_and_end_with_today():
    from types import SimpleNamespace

    from assets.partitions import HISTORY_START, partition_window

    def window(key):
        return partition_window(SimpleNamespace(has_partition_key=True, has_partition_key_range=False,
                                                partition_time_window=market_partitions.time_window_for_partition_key(key)))

    keys = market_partitions.get_partition_keys()
    today = dt.datetime.now(dt.timezone.utc).date()
    assert keys[0] == HISTORY_START.replace(day=1).isoformat() and keys[-1] == today.replace(day=1).isoformat()
    assert window(keys[0])[0] == dt.datetime.combine(HISTORY_START, dt.time())
    assert window(keys[1]) == (dt.datetime.fromisoformat(keys[1]), dt.datetime.fromisoformat(keys[2]))
    assert window(keys[-1]) == (dt.datetime.fromisoformat(keys[-1]), dt.datetime.combine(today + dt.timedelta(days=1), dt.time()))
