"""The drift sensor on instance_for_test: planted drift requests one run, a judged report skips, no drift skips
with a reason, the cool-down holds (cursor and the instance's runs), the request's tags and asset selection."""

from __future__ import annotations

import json
import shutil
import time

import dagster as dg
import pytest

from assets.automation import drift_retrain_sensor
from assets.monitoring import monitoring_drift
from assets.resources import SettingsResource, WarehouseResource
from pipeline.monitoring.drift import compute_drift, store_drift
from pipeline.warehouse import Warehouse
from tests.monitoring.conftest import BARS, plant, ts_of

AT = f"{ts_of(BARS - 1):%Y-%m-%dT%H:%M}"  # the newest bar: the report's id
LATER = f"{ts_of(BARS):%Y-%m-%dT%H:%M}"
DOWNSTREAM = ["backtest/models", "backtest/comparison", "signals/latest", "signals/paper_ledger"]
MODELS_AND_BACKTESTS = ["models/tcn", "models/wavenet", *DOWNSTREAM]


def _resources(data_dir):
    settings = SettingsResource(data_dir=str(data_dir), symbols="AAAUSDT,BBBUSDT")
    return {"settings": settings, "warehouse": WarehouseResource(settings=settings)}


def _tick(instance, data_dir, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=_resources(data_dir)) as context:
        return drift_retrain_sensor(context)


def _skip(result) -> str:
    assert not result.run_requests, result.run_requests
    return result.skip_reason.skip_message


@pytest.fixture(scope="module")
def drifted_file(tmp_path_factory):
    wh, settings = plant(tmp_path_factory.mktemp("drifted") / "warehouse.duckdb", drift_symbols=("AAAUSDT",))
    store_drift(wh, compute_drift(wh, settings))
    return wh.path


@pytest.fixture
def drifted(drifted_file, tmp_path):
    """A fresh copy of the planted warehouse with its drift report (a test may change it)."""
    shutil.copy(drifted_file, tmp_path / "warehouse.duckdb")
    return tmp_path, Warehouse(tmp_path / "warehouse.duckdb")


def test_first_tick_requests_the_affected_models_and_the_second_skips(drifted):
    data_dir, _ = drifted
    with dg.instance_for_test() as instance:
        first = _tick(instance, data_dir)
        assert len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.tags["trigger"] == "drift"
        assert f"AAAUSDT@{AT}" in request.run_key and "BBBUSDT" not in request.run_key
        assert [k.to_user_string() for k in request.asset_selection] == MODELS_AND_BACKTESTS
        cursor = json.loads(first.cursor)
        assert cursor["seen"]["AAAUSDT"] == f"AAAUSDT@{AT}" and cursor["last_retrain"] > 0

        second = _tick(instance, data_dir, first.cursor)
        assert "already judged" in _skip(second)
        # the same report without the cursor gives the same run key: Dagster launches one run per key
        assert _tick(instance, data_dir).run_requests[0].run_key == request.run_key


def test_no_drift_skips_with_the_reason(tmp_path):
    wh, settings = plant(tmp_path / "warehouse.duckdb")
    store_drift(wh, compute_drift(wh, settings))
    with dg.instance_for_test() as instance:
        result = _tick(instance, tmp_path)
        reason = _skip(result)
        assert "no drift, no accuracy decay" in reason and "AAAUSDT@" in reason and "BBBUSDT@" in reason
        assert "already judged" in _skip(_tick(instance, tmp_path, result.cursor))


def test_without_a_report_the_sensor_says_what_to_materialize(tmp_path):
    with dg.instance_for_test() as instance:
        assert "materialize monitoring/drift" in _skip(_tick(instance, tmp_path))


def test_accuracy_decay_retrains_only_the_decayed_architecture(tmp_path):
    wh, settings = plant(tmp_path / "warehouse.duckdb", decay=(("BBBUSDT", "wavenet"),))
    store_drift(wh, compute_drift(wh, settings))
    with dg.instance_for_test() as instance:
        request = _tick(instance, tmp_path).run_requests[0]
    assert [k.to_user_string() for k in request.asset_selection] == ["models/wavenet", *DOWNSTREAM]
    assert request.tags["convtrade/drift_reports"] == f"BBBUSDT@{AT}"


def test_cool_down_holds_then_lets_the_pending_report_through(drifted):
    data_dir, wh = drifted
    with dg.instance_for_test() as instance:
        first = _tick(instance, data_dir)
        # a newer report with drift, one hour later
        with wh.connect() as con:
            con.execute("""update monitoring.drift set "at" = "at" + interval 1 hour""")
        held = _tick(instance, data_dir, first.cursor)
        reason = _skip(held)
        assert reason.startswith("cool-down") and f"AAAUSDT@{LATER}" in reason
        assert held.cursor == first.cursor  # still pending
        state = json.loads(first.cursor)
        state["last_retrain"] = time.time() - 25 * 3600  # past the 24 h default
        later = _tick(instance, data_dir, json.dumps(state))
        assert later.run_requests[0].run_key == f"drift:AAAUSDT@{LATER}"


def test_a_recent_drift_run_in_the_instance_starts_the_cool_down_without_a_cursor(drifted):
    data_dir, _ = drifted

    @dg.asset
    def dummy():
        return 1

    with dg.instance_for_test() as instance:
        assert dg.materialize([dummy], instance=instance, tags={"trigger": "drift"}).success
        assert _skip(_tick(instance, data_dir)).startswith("cool-down")


def test_the_drift_asset_writes_the_report_the_sensor_reads(tmp_path):
    wh, _ = plant(tmp_path / "warehouse.duckdb", drift_symbols=("BBBUSDT",))
    result = dg.materialize([monitoring_drift], resources=_resources(tmp_path))
    assert result.success
    meta = result.asset_materializations_for_node("monitoring__drift")[0].metadata
    assert meta["rows_drift"].value == wh.query("select count(*) as n from monitoring.drift")["n"][0] > 0
    assert "BBBUSDT" in meta["summary"].value and "psi_plot" in meta
    assert (tmp_path / "reports" / "monitoring" / "drift_psi.png").exists()
    with dg.instance_for_test() as instance:
        assert "BBBUSDT@" in _tick(instance, tmp_path).run_requests[0].run_key
