"""compute_drift on a planted warehouse: windows, verdicts per symbol, accuracy decay, idempotent writes."""

from __future__ import annotations

import pytest
from tests.monitoring.conftest import plant, ts_of

from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.monitoring.drift import DriftThresholds, compute_drift, latest_verdicts, store_drift


def test_planted_shift_drifts_one_symbol_and_wrong_predictions_decay_one_model(tmp_path):
    wh, settings = plant(tmp_path / "warehouse.duckdb", drift_symbols=("AAAUSDT",), decay=(("BBBUSDT", "tcn"),))
    report = compute_drift(wh, settings)
    assert report.skipped == []
    drift = report.drift
    assert drift.height == 2 * len(MODEL_INPUT_COLUMNS)
    # reference = the newest fold's training range (bars 10..799 after warm-up), current = newest 720 bars
    row = drift.filter(drift["symbol"] == "AAAUSDT").row(0, named=True)
    assert (row["reference_start"], row["reference_end"]) == (ts_of(10), ts_of(799))
    assert (row["current_start"], row["current_end"], row["at"]) == (ts_of(880), ts_of(1599), ts_of(1599))
    assert row["model_id"] in ("tcn-fold1", "wavenet-fold1")
    a = drift.filter(drift["symbol"] == "AAAUSDT")
    b = drift.filter(drift["symbol"] == "BBBUSDT")
    assert a["drifted"].all() and a["psi"].min() > 0.2
    # no planted shift: none of 35 features crosses the thresholds (Bonferroni keeps false alarms rare)
    assert not b["drifted"].any()
    acc = {(r["symbol"], r["architecture"]): r for r in report.accuracy.iter_rows(named=True)}
    assert acc[("BBBUSDT", "tcn")]["recent_accuracy"] == 0.0 and acc[("BBBUSDT", "tcn")]["decayed"]
    assert acc[("BBBUSDT", "tcn")]["n_recent"] == 168
    assert acc[("BBBUSDT", "wavenet")]["walk_forward_accuracy"] == pytest.approx(0.6)
    assert not acc[("BBBUSDT", "wavenet")]["decayed"]

    written = store_drift(wh, report)
    again = store_drift(wh, compute_drift(wh, settings))
    assert written == again
    assert wh.query("select count(*) as n from monitoring.drift")["n"][0] == drift.height
    verdicts = {v.symbol: v for v in latest_verdicts(wh, DriftThresholds.from_settings(settings))}
    assert verdicts["AAAUSDT"].triggered and verdicts["AAAUSDT"].affected_models == ("tcn", "wavenet")
    assert verdicts["BBBUSDT"].drifted_features == () and verdicts["BBBUSDT"].decayed_models == ("tcn",)
    assert verdicts["BBBUSDT"].affected_models == ("tcn",)
    # a looser threshold re-judges the stored statistics
    loose = DriftThresholds(psi=100.0, ks_pvalue=1e-300, accuracy_drop=0.99)
    assert not any(v.triggered for v in latest_verdicts(wh, loose))


def test_without_a_trained_model_the_symbol_is_skipped_with_a_reason(tmp_path):
    wh, settings = plant(tmp_path / "warehouse.duckdb")
    wh.replace_rows("models.registry", wh.query("select * from models.registry limit 0"), "true")
    report = compute_drift(wh, settings)
    assert report.drift.height == 0
    assert all("no trained model" in s for s in report.skipped) and len(report.skipped) == 2
