"""The model lifecycle (issue 28) on the tiny live warehouse (tests/live/conftest.py): a worse retrain stays a
challenger and the signals do not change; rollback restores the previous champion's signals artifact for
artifact; the live refit trains up to the newest labelled bar and nothing after it; retention keeps K versions;
a damaged artifact skips only its model; a damaged checkpoint is discarded; a kill -9 during a training leaves
the champion live and no row pointing at a missing artifact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from assets.resources import SettingsResource, WarehouseResource
from assets.training import build_model_asset
from pipeline.cli import models_command
from pipeline.config import Settings
from pipeline.live import latest_signals
from pipeline.training import lifecycle
from pipeline.training.artifacts import load_artifact
from pipeline.training.datasets import build_window_store, load_series
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import time_folds, train_architecture, train_fold
from tests.live.conftest import SYMBOLS, TINY, build

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLANTED = "log_ret_1"  # the feature column that carries the next bar's direction (the signal a model can learn)
RECIPE = {**TINY, "epochs": 4, "max_train_windows": 0, "learning_rate": 0.01, "patience": 4}
ENV = {"CONVTRADE_WINDOW": "16", "CONVTRADE_N_FOLDS": "2", "CONVTRADE_EPOCHS": "4", "CONVTRADE_BATCH_SIZE": "64",
       "CONVTRADE_EMBARGO_BARS": "2", "CONVTRADE_TRAIN_MIN_FRACTION": "0.5", "CONVTRADE_MAX_TRAIN_WINDOWS": "0",
       "CONVTRADE_LEARNING_RATE": "0.01", "CONVTRADE_PATIENCE": "4"}


def _plant(wh, shuffle_seed: int | None = None) -> None:
    """``PLANTED`` = the bar's label (the next bar's direction) + a little noise, on every labelled bar; with
    ``shuffle_seed`` it is noise instead (no signal) on all but the newest 20 bars (the newest windows, which the
    live signal reads, keep their values)."""
    with wh.connect() as con:
        con.execute(f"""
            update features.candle_features f set {PLANTED} = l.direction + 0.3 * ((hash(f.ts) % 1000) / 1000.0 - 0.5)
            from features.labels l
            where f.symbol = l.symbol and f.interval = l.interval and f.ts = l.ts and not f.is_warmup
              and l.direction is not null""")
        if shuffle_seed is not None:
            con.execute(f"""
                update features.candle_features set {PLANTED} = (hash(epoch_ms(ts) + {shuffle_seed}) % 1000) / 500.0 - 1
                where not is_warmup and ts < (select max(ts) from features.candle_features) - interval 20 hour""")


def _resources(settings):
    res = SettingsResource(data_dir=str(settings.data_dir), symbols=",".join(SYMBOLS))
    return {"settings": res, "warehouse": WarehouseResource(settings=res)}


def _signals(wh, settings) -> pl.DataFrame:
    result = latest_signals(wh, settings)
    return result.signals.sort("architecture", "symbol").drop("created_at", strict=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The live warehouse (its first version v0 trained on noise features) with a planted signal and a champion
    trained on it (v1, promotion forced)."""
    wh, settings = build(tmp_path_factory.mktemp("lifecycle") / "warehouse.duckdb")
    _plant(wh)
    config = TrainingConfig(**RECIPE)
    out = store_training(wh, train_architecture(wh, settings, config, log=lambda _: None), settings, force=True)
    v1 = lifecycle.champion_of(wh, "tcn", "60")["version"]
    return wh, settings, v1, out


def test_worse_retrain_stays_challenger_then_force_then_rollback(planted, monkeypatch):
    wh, settings, v1, first = planted
    assert first["promotion"]["action"] == "force" and first["promotion"]["promoted"]
    v0 = first["promotion"]["champion_before"]
    before = _signals(wh, settings)
    assert before["version"].unique().to_list() == [v1]
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    _plant(wh, shuffle_seed=1)  # the signal destroyed: a retrain on it is worse on the shared test bars
    try:
        asset = build_model_asset("tcn")
        result = dg.materialize([asset], resources=_resources(settings))
        meta = result.asset_materializations_for_node("models__tcn")[0].metadata
        v2 = meta["version"].value
        assert v2 != v1 and meta["promoted"].value is False, meta["promotion_reason"].value
        assert "stays a challenger" in meta["promotion_reason"].value and "worse than" in meta["promotion_reason"].value
        assert lifecycle.champion_of(wh, "tcn", "60")["version"] == v1
        after = _signals(wh, settings)
        assert after.equals(before)  # the signals still come from v1's live refit, unchanged
        rows = wh.query("select version, promoted, action, reason from models.promotions order by \"at\"")
        assert rows["promoted"].to_list() == [True, True, False] and rows["version"].to_list() == [v0, v1, v2]
        # the same data, code and settings again: the same version, nothing retrained
        again = dg.materialize([asset], resources=_resources(settings))
        meta2 = again.asset_materializations_for_node("models__tcn")[0].metadata
        assert meta2["version"].value == v2 and "unchanged" in meta2["promoted"].value
        assert wh.query("select count(*) as n from models.versions")["n"][0] == 3
        assert models_command("list", None, None, None, str(wh.path)) == 0
        # a manual run may force promotion (tag); the next signals trade v2's live refit
        assert models_command("promote", "tcn", "nope", None, str(wh.path)) == 1
        assert models_command("promote", "tcn", v2, None, str(wh.path)) == 0
        assert lifecycle.champion_of(wh, "tcn", "60")["version"] == v2
        assert _signals(wh, settings)["version"].unique().to_list() == [v2]
        # rollback restores v1: the next signals equal v1's, artifact for artifact
        assert models_command("rollback", "tcn", None, None, str(wh.path)) == 0
        assert lifecycle.champion_of(wh, "tcn", "60")["version"] == v1
        assert _signals(wh, settings).equals(before)
        assert models_command("rollback", "wavenet", None, None, str(wh.path)) == 1  # no champion to roll back
        actions = wh.query("select action, from_version, to_version from models.promotions order by \"at\"")
        assert actions["action"].to_list() == ["first", "force", "gate", "promote", "rollback"]
        assert actions.row(-1) == ("rollback", v2, v1)
        # forced by the tag on a manual run
        with pytest.raises(ValueError, match="convtrade/promote"):
            dg.materialize([asset], resources=_resources(settings), tags={"convtrade/promote": "yes"})
    finally:
        _plant(wh)


def test_a_damaged_artifact_skips_only_its_model_and_promote_refuses_it(planted):
    wh, settings, v1, _ = planted
    other = TrainingConfig(**{**RECIPE, "architecture": "inception"})
    store_training(wh, train_architecture(wh, settings, other, log=lambda _: None, live_refit=False), settings)
    assert set(_signals(wh, settings)["architecture"]) == {"tcn", "inception"}
    live = wh.query("select artifact_path from models.live where architecture = 'tcn'")["artifact_path"][0]
    weights = Path(live) / "weights.safetensors"
    original = weights.read_bytes()
    try:
        damaged = bytearray(original)
        damaged[-8:] = bytes(8)  # bytes flipped inside the tensors: safetensors still loads it
        weights.write_bytes(bytes(damaged))
        result = latest_signals(wh, settings)
        assert set(result.signals["architecture"]) == {"inception"}
        assert any(str(weights) in line and "SHA-256" in line for line in result.skipped), result.skipped
        with pytest.raises(lifecycle.LifecycleError, match="weights.safetensors"):
            lifecycle._check_artifacts(wh.query(
                "select model_id, role, artifact_path, cast(artifact_sha256 as varchar) as sha, purged "
                "from models.registry where version = ?", [v1]), "tcn", v1)
    finally:
        weights.write_bytes(original)
    assert set(_signals(wh, settings)["architecture"]) == {"tcn", "inception"}


def test_live_refit_trains_up_to_the_newest_labelled_bar_and_nothing_after(planted, tmp_path):
    wh, settings, v1, _ = planted
    live = wh.query("select train_end, artifact_path, symbol from models.live where architecture = 'tcn'")
    newest_labelled = wh.query("select max(ts) as ts from features.labels where direction is not null")["ts"][0]
    assert live["train_end"][0] == newest_labelled
    result = latest_signals(wh, settings).signals.filter(pl.col("architecture") == "tcn")
    assert (result["train_end"] == newest_labelled).all()
    # leakage: the model inputs of the bars after the newest labelled one (here the newest bar) changed: the live
    # refit's weights do not move
    newest = wh.query("select max(ts) as ts from features.candle_features")["ts"][0]
    assert newest > newest_labelled
    data = tmp_path / "data"
    moved = Settings(data_dir=data, symbols=SYMBOLS)
    config = TrainingConfig(**{**TINY, "n_folds": 1})
    a = train_architecture(wh, moved, config, log=lambda _: None)
    with wh.connect() as con:
        con.execute(f"update features.candle_features set {PLANTED} = {PLANTED} + 5 where ts = ?", [newest])
    try:
        b = train_architecture(wh, moved, config, log=lambda _: None)
    finally:
        with wh.connect() as con:
            con.execute(f"update features.candle_features set {PLANTED} = {PLANTED} - 5 where ts = ?", [newest])
    assert a.version != b.version  # other data, another version
    wa = load_artifact(a.live["artifact_path"][0]).state_dict()
    wb = load_artifact(b.live["artifact_path"][0]).state_dict()
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k
    assert a.live["train_end"][0] == b.live["train_end"][0] == newest_labelled


def test_retention_keeps_k_versions_and_marks_the_rest_purged(tmp_path):
    wh, settings = build(tmp_path / "warehouse.duckdb")  # version 1, the champion
    settings = Settings(data_dir=settings.data_dir, symbols=SYMBOLS, keep_versions=2)
    for seed in (101, 102, 103):  # K + 2 = 4 trainings, 4 versions (the seed is a setting)
        config = TrainingConfig(**{**TINY, "seed": seed})
        store_training(wh, train_architecture(wh, settings, config, log=lambda _: None, live_refit=False), settings)
    versions = wh.query("select version, purged from models.versions order by created_at")
    assert versions.height == 4
    champion = lifecycle.champion_of(wh, "tcn", "60")
    kept = versions.filter(~pl.col("purged"))["version"].to_list()
    assert len(kept) == 2 and champion["version"] in kept
    if champion["previous_version"]:
        assert champion["previous_version"] in kept
    on_disk = sorted(p.name for p in (settings.artifacts_dir / "models" / "tcn").iterdir() if p.is_dir())
    assert on_disk == sorted(kept)
    rows = wh.query("select artifact_path, purged, version from models.registry")
    for path, purged, version in rows.iter_rows():
        assert Path(path).exists() != purged, (path, purged)
    listing = lifecycle.list_versions(wh, "tcn")
    assert listing.filter(pl.col("status") == "purged").height == 2
    # a purged version cannot be promoted
    gone = versions.filter(pl.col("purged"))["version"][0]
    with pytest.raises(lifecycle.LifecycleError, match="purged"):
        lifecycle.promote(wh, "tcn", gone, "60")


def test_a_checkpoint_that_does_not_load_is_discarded_and_the_fold_retrained(planted, tmp_path):
    wh, settings, _, _ = planted
    series = [load_series(wh, s, "60", 1) for s in SYMBOLS]
    store = build_window_store(series, tmp_path, 16, 1)
    config = TrainingConfig(**{**TINY, "epochs": 1})
    fold, fit, val, test, grid = time_folds(store, config)[0]
    m1, _, _ = train_fold(store, config, 0, fit, val, tmp_path / "a", log=lambda _: None)
    (tmp_path / "b").mkdir()
    good = (tmp_path / "a" / "checkpoint.pt").read_bytes()
    (tmp_path / "b" / "checkpoint.pt").write_bytes(good[: len(good) // 2])  # a kill during an in-place save
    lines = []
    m2, _, _ = train_fold(store, config, 0, fit, val, tmp_path / "b", log=lines.append)
    assert any("does not load" in l and str(tmp_path / "b" / "checkpoint.pt") in l for l in lines), lines
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


KILLED_TRAINING = """
import sys
from pathlib import Path
from pipeline.config import Settings
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import train_architecture
from pipeline.warehouse import Warehouse
from tests.live.conftest import SYMBOLS, TINY
wh = Warehouse(sys.argv[1])
settings = Settings(data_dir=Path(sys.argv[1]).parent, symbols=SYMBOLS)
config = TrainingConfig(**{**TINY, "seed": 11, "epochs": 2})
store_training(wh, train_architecture(wh, settings, config, log=lambda s: print(s, flush=True)), settings)
print("STORED", flush=True)
"""


def test_kill_9_during_training_leaves_the_champion_and_no_row_without_artifact(tmp_path):
    wh, settings = build(tmp_path / "warehouse.duckdb")
    champion = lifecycle.champion_of(wh, "tcn", "60")["version"]
    before = _signals(wh, settings)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(wh.path)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    seen = []
    for line in proc.stdout:  # kill it in the middle of its second fold (the first fold's artifacts written)
        seen.append(line)
        if "fold 1 epoch 1/" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert lifecycle.champion_of(wh, "tcn", "60")["version"] == champion
    assert _signals(wh, settings).equals(before)
    for path, sha in wh.query("select artifact_path, cast(artifact_sha256 as varchar) from models.registry "
                              "where not purged").iter_rows():
        load_artifact(path, sha)  # every stored row's artifact is there, byte for byte
    assert wh.query("select count(*) as n from models.versions")["n"][0] == 1
    # the next run completes (resuming the killed version's checkpoints)
    done = subprocess.run([sys.executable, "-c", KILLED_TRAINING, str(wh.path)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "STORED" in done.stdout, done.stdout + done.stderr
    assert "resumed from" in done.stdout
    assert wh.query("select count(*) as n from models.versions")["n"][0] == 2
