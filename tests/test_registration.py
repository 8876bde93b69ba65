"""Adding an architecture or an image encoding is its own file plus its registration, nothing else to edit.

A plugin module written here (as a user would write one) registers a dummy 1D and a dummy 2D architecture,
their trainable models and a dummy image encoding. A fresh process imports it, then the definitions: the
``encodings/dummy_closes`` and ``models/dummy_*`` assets and checks appear, the backtest, drift and signal
assets depend on the new models, and materializing them on the synthetic market (two symbols, two months)
writes the encoding's files and index table and trains both models walk-forward into ``models.registry`` and
``predictions.oos``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A user's plugin: one architecture file's worth of registrations and one encoding."""
import dataclasses

import numpy as np
from torch import nn

from pipeline.encodings.build import EncodingSpec, register_encoding
from pipeline.models.catalogue import TrainableModel, register_trainable
from pipeline.models.heads import MultiTaskHead
from pipeline.models.zoo import Architecture, ZooModel, register_architecture


@dataclasses.dataclass(frozen=True)
class DummyConfig:
    in_channels: int = 15
    width: int = 8
    image_size: tuple = (8, 8)


def build_dummy_1d(cfg):
    body = nn.Sequential(nn.Conv1d(cfg.in_channels, cfg.width, 3, padding=1), nn.ReLU())
    return ZooModel(cfg, body, MultiTaskHead(cfg.width, "last"), causal=False, kind="sequence")


def build_dummy_2d(cfg):
    body = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1), nn.ReLU())
    return ZooModel(cfg, body, MultiTaskHead(cfg.width, "avg"), causal=False, kind="image")


register_architecture(Architecture("dummy_conv1d", DummyConfig, {"default": DummyConfig()}, build_dummy_1d,
                                   causal=False, kind="sequence", default_input_shape=(15, 16)))
register_architecture(Architecture("dummy_conv2d", DummyConfig, {"default": DummyConfig(in_channels=1)},
                                   build_dummy_2d, causal=False, kind="image", default_input_shape=(1, 8, 8)))


class CloseDistances:
    """Pairwise differences of the last 8 log closes: a (1, 8, 8) image per bar."""

    dtype = np.float32
    input_length = 8

    def output_shape(self, in_channels=1):
        return (1, 8, 8)

    def encode(self, windows):
        logc = np.log(windows[:, 3, :])
        return (logc[:, None, :, None] - logc[:, None, None, :]).astype(np.float32)


register_encoding(EncodingSpec("dummy_closes", CloseDistances(), "candles", 8, lambda w: w, 5,
                               "pairwise differences of the last 8 log closes (a test's dummy encoding)"))
register_trainable(TrainableModel("dummy_seq", "dummy_conv1d"))
register_trainable(TrainableModel("dummy_img", "dummy_conv2d", encoding="dummy_closes"))
'''

SCRIPT = '''
import json, sys
import convtrade_dummy_plugin  # noqa: F401 - registers before the definitions are built
import dagster as dg
from assets import backtests, encodings, features, market, monitoring, signals, training
from assets.definitions import all_resources, defs, partition_range_tags
from assets.partitions import first_partition_keys
from assets.resources import SettingsResource
from pipeline.warehouse import Warehouse

graph = defs.resolve_asset_graph()
keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
deps = {name: sorted(p.to_user_string() for p in graph.get(dg.AssetKey(name.split("/"))).parent_keys)
        for name in ("backtest/models", "monitoring/drift", "signals/latest", "models/dummy_img")}
checks = sorted(c.name + "@" + c.asset_key.to_user_string() for c in graph.asset_check_keys)
data_dir = sys.argv[1]
resources = all_resources(SettingsResource(data_dir=data_dir, symbols="BTCUSDT,ETHUSDT"))
months = first_partition_keys(60)
enc = next(a for a in encodings.ENCODING_ASSETS if a.key.path[1] == "dummy_closes")
partitioned = [market.raw_candles, market.raw_funding, features.feature_models, enc]
ok = dg.materialize(partitioned, resources=resources, tags=partition_range_tags(months[0], months[-1])).success
models = [a for a in training.MODEL_ASSETS if a.key.path[1].startswith("dummy_")]
model_checks = [c for c in training.MODEL_CHECKS if next(iter(c.check_keys)).asset_key.path[1].startswith("dummy_")]
trained = dg.materialize([*partitioned, *models, *model_checks], resources=resources,
                         selection=[*models, *model_checks], raise_on_error=False)
wh = Warehouse(data_dir + "/warehouse.duckdb")
registry = wh.query("select architecture, count(*) as folds from models.registry where role = 'fold' "
                    "group by 1 order by 1").to_dicts()
predictions = wh.query("select r.architecture, count(*) as n from predictions.oos p join models.registry r "
                       "using (model_id) group by 1 order by 1").to_dicts()
index = wh.query("select symbol, count(*) as n from encodings.dummy_closes_index group by 1 order by 1").to_dicts()
materialized = sorted(e.asset_key.to_user_string() for e in trained.get_asset_materialization_events())
evaluated = sorted(e.asset_key.to_user_string() for e in trained.get_asset_check_evaluations())
print(json.dumps({"keys": sorted(keys), "deps": deps, "checks": checks, "market_ok": ok,
                  "materialized": materialized, "checked": evaluated, "registry": registry,
                  "predictions": predictions, "index": index}))
'''

TINY = {"CONVTRADE_WINDOW": "16", "CONVTRADE_N_FOLDS": "2", "CONVTRADE_EPOCHS": "1",
        "CONVTRADE_EMBARGO_BARS": "2", "CONVTRADE_MAX_TRAIN_WINDOWS": "600", "CONVTRADE_BATCH_SIZE": "128",
        "CONVTRADE_TRAINING_THREADS": "1"}


def test_a_registered_architecture_and_encoding_become_assets_and_train(tmp_path):
    (tmp_path / "convtrade_dummy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    env = {**os.environ, **TINY, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]),
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "data")], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"encodings/dummy_closes", "models/dummy_seq", "models/dummy_img"} <= set(out["keys"])
    assert {"files_match_index@encodings/dummy_closes", "training_is_sound@models/dummy_seq",
            "training_is_sound@models/dummy_img"} <= set(out["checks"])
    for downstream in ("backtest/models", "monitoring/drift", "signals/latest"):
        assert {"models/dummy_seq", "models/dummy_img"} <= set(out["deps"][downstream]), downstream
    assert out["deps"]["models/dummy_img"] == ["encodings/dummy_closes", "features/labels"]
    assert out["market_ok"], done.stderr[-4000:]
    # both trained through their assets, and their checks judged them (whatever a dummy's skill)
    assert out["materialized"] == ["models/dummy_img", "models/dummy_seq"], done.stderr[-4000:]
    assert out["checked"] == ["models/dummy_img", "models/dummy_seq"], done.stderr[-4000:]
    assert [r["symbol"] for r in out["index"]] == ["BTCUSDT", "ETHUSDT"] and all(r["n"] > 1000 for r in out["index"])
    assert out["registry"] == [{"architecture": "dummy_img", "folds": 2}, {"architecture": "dummy_seq", "folds": 2}]
    assert [r["architecture"] for r in out["predictions"]] == ["dummy_img", "dummy_seq"]
    assert all(r["n"] > 0 for r in out["predictions"])
