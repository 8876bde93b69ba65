"""The schedules and sensors in the Definitions: drift sensor and run-status sensor present, the nightly job
refreshes the drift report and the signals after the models, the post-refresh job selects monitoring + signals."""

from __future__ import annotations

from assets.definitions import ASSET_MODULES, defs


def _selected(job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_sensors_and_jobs_are_wired():
    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    assert {"drift_retrain", "signals_after_refresh", "fail_dead_runs"} <= set(sensors)
    assert {"monitoring", "signals"} <= {m.__name__.split(".")[-1] for m in ASSET_MODULES}
    nightly = _selected("nightly_retrain")
    assert {"models/tcn", "backtest/models", "backtest/comparison", "monitoring/drift", "signals/latest",
            "signals/paper_ledger"} <= nightly
    assert defs.resolve_job_def("nightly_retrain").tags["trigger"] == "schedule"
    assert _selected("refresh_signals") == {"monitoring/drift", "signals/latest", "signals/paper_ledger"}
    # the drift sensor may launch every asset it requests
    drift = sensors["drift_retrain"]
    targets = _selected(drift.job_name)
    assert {"models/tcn", "models/inception", "backtest/models", "signals/paper_ledger"} <= targets


def test_a_successful_refresh_run_requests_the_signals_job_once():
    import dagster as dg

    sensor = next(s for s in defs.get_repository_def().sensor_defs if s.name == "signals_after_refresh")

    @dg.asset
    def tiny():
        return 1

    with dg.instance_for_test() as instance:
        result = dg.materialize([tiny], instance=instance)
        event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        run = instance.get_run_by_id(result.run_id)
        context = dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=event,
                                                     dagster_instance=instance, dagster_run=run)
        request = sensor(context)
    assert sensor.job_name == "refresh_signals"
    assert request.run_key == f"after:{result.run_id}" and request.tags["trigger"] == "schedule"
