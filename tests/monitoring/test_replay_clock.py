"""The replay clock (``CONVTRADE_CLOCK``): the source never returns a bar closing after it, the month in
progress ends with its day, and the drift sensor's cool-down runs on it (the run's ``decided_at`` tag)."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from assets.automation import DECIDED_AT_TAG, drift_decision, _last_drift_run
from assets.partitions import partition_window
from pipeline.config import Settings
from pipeline.market.ingest import build_source
from pipeline.monitoring.drift import Verdict


def test_the_source_returns_no_bar_after_the_clock():
    settings = Settings(symbols=("BTCUSDT",), clock="2026-01-20T05:30")
    candles = build_source(settings).candles("BTCUSDT", "60", dt.datetime(2026, 1, 19), dt.datetime(2026, 1, 22))
    # the 04:00 bar closed at 05:00; the 05:00 bar is still open at 05:30
    assert candles["ts"].max() == dt.datetime(2026, 1, 20, 4)
    assert candles.height == 24 + 5
    later = build_source(Settings(symbols=("BTCUSDT",), clock="2026-01-21T00:00"))
    assert later.candles("BTCUSDT", "60", dt.datetime(2026, 1, 19), dt.datetime(2026, 1, 22))["ts"].max() == \
        dt.datetime(2026, 1, 20, 23)


def test_the_month_in_progress_ends_with_the_clocks_day(monkeypatch):
    class Context:
        has_partition_key, has_partition_key_range = True, False
        partition_time_window = dg.TimeWindow(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                                              dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc))

    assert partition_window(Context(), dt.datetime(2026, 1, 17, 0, 15)) == (dt.datetime(2026, 1, 1),
                                                                             dt.datetime(2026, 1, 18))
    monkeypatch.setenv("CONVTRADE_CLOCK", "2026-01-09T00:15")  # the default: the settings' clock
    assert partition_window(Context())[1] == dt.datetime(2026, 1, 10)
    monkeypatch.setenv("CONVTRADE_CLOCK", "2026-03-09T00:15")  # a past month ends with its own end
    assert partition_window(Context())[1] == dt.datetime(2026, 2, 1)


def _drifted(day: int) -> list[Verdict]:
    return [Verdict("ETHUSDT", dt.datetime(2026, 1, day, 23), ("log_ret_1",), (), ("tcn",))]


def test_the_cool_down_counts_from_the_decision_on_the_replay_clock():
    decided = dt.datetime(2026, 1, 21, 3, tzinfo=dt.timezone.utc).timestamp()
    first = drift_decision(_drifted(20), None, decided, 24.0)
    (request,) = first.run_requests
    assert request.tags[DECIDED_AT_TAG] == f"{decided:.0f}"

    @dg.asset
    def dummy():
        return 1

    with dg.instance_for_test() as instance:
        # the run is created now (wall clock, months after the replayed day): the cool-down still counts
        # from the replayed decision, so the next day's report may retrain and a report 12 h later may not
        assert dg.materialize([dummy], instance=instance, tags=request.tags).success
        last = _last_drift_run(instance)
        assert last == float(f"{decided:.0f}")
        no_cursor = json.dumps({"seen": {}})
        held = drift_decision(_drifted(21), no_cursor, decided + 12 * 3600, 24.0, last)
        assert not held.run_requests and held.skip_reason.skip_message.startswith("cool-down")
        assert drift_decision(_drifted(21), no_cursor, decided + 24 * 3600, 24.0, last).run_requests
