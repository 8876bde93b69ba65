"""The settings file (convtrade.yaml / CONVTRADE_CONFIG): precedence, errors that name key, file and line,
`convtrade settings`, and the launchpad's settings config built from every Settings field."""

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import Settings

FILE = """\
# a project's settings
symbols: [BTCUSDT, ETHUSDT]
epochs: 5
learning_rate: 0.001
pooled: false
data_dir: /tmp/from-file
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "convtrade.yaml"
    path.write_text(text)
    return path


def test_environment_beats_the_file_which_beats_the_defaults(tmp_path):
    path = _write(tmp_path, FILE)
    env = {"CONVTRADE_CONFIG": str(path), "CONVTRADE_EPOCHS": "7"}
    settings, origin = Settings.resolve(env, window=32)
    assert settings.symbols == ("BTCUSDT", "ETHUSDT") and origin["symbols"] == f"{path}:2"
    assert settings.epochs == 7 and origin["epochs"] == "CONVTRADE_EPOCHS"  # environment > file
    assert settings.learning_rate == 0.001 and settings.pooled is False and origin["pooled"] == f"{path}:5"
    assert settings.data_dir == Path("/tmp/from-file")
    assert settings.window == 32 and origin["window"] == "override"
    assert settings.batch_size == Settings.batch_size and origin["batch_size"] == "default"
    assert Settings.from_env({"CONVTRADE_CONFIG": str(path), "DATA_DIR": "/tmp/env"}).data_dir == Path("/tmp/env")


def test_the_file_in_the_working_directory_is_read_and_an_empty_variable_turns_it_off(tmp_path, monkeypatch):
    _write(tmp_path, "epochs: 9\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).epochs == 9
    assert Settings.from_env({"CONVTRADE_CONFIG": ""}).epochs == Settings.epochs


@pytest.mark.parametrize("text, message", [
    ("epochs: 5\nepoch: 3\n", r"convtrade.yaml:2: unknown setting 'epoch' \(did you mean epochs\?\)"),
    ("symbols: [BTCUSDT]\nepochs: five\n", r"convtrade.yaml:2: epochs='five' is not an integer"),
    ("\n\nsource: nope\n", r"convtrade.yaml:3: source='nope': use one of synthetic, files, bybit"),
    ("window: 0\n", r"convtrade.yaml:1: window=0: must be >= 1"),
    ("epochs: 5\nepochs: 6\n", r"convtrade.yaml:2: 'epochs' is given twice \(first on line 1\)"),
    ("symbols: {a: 1}\n", r"convtrade.yaml:1: symbols must be a single value or a list"),
    ("epochs: [5\n", r"convtrade.yaml:\d+: not valid YAML"),
    ("- epochs\n", r"convtrade.yaml:1: the settings file must be a mapping"),
])
def test_bad_keys_and_values_name_the_key_the_file_and_the_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"CONVTRADE_CONFIG": str(path)})


def test_a_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="CONVTRADE_CONFIG=.*no such settings file"):
        Settings.from_env({"CONVTRADE_CONFIG": str(tmp_path / "absent.yaml")})


def test_convtrade_settings_prints_each_value_and_its_origin(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    path = _write(tmp_path, FILE)
    monkeypatch.setenv("CONVTRADE_CONFIG", str(path))
    monkeypatch.setenv("CONVTRADE_EPOCHS", "7")
    assert main(["settings"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert len([name for name in lines if name != "setting"]) == len(dataclasses.fields(Settings))
    assert "BTCUSDT,ETHUSDT" in lines["symbols"] and f"{path}:2" in lines["symbols"]
    assert "CONVTRADE_EPOCHS" in lines["epochs"] and "default" in lines["window"]
    _write(tmp_path, "epoch: 1\n")
    assert main(["settings"]) == 2 and "unknown setting 'epoch'" in capsys.readouterr().err


def test_the_launchpad_settings_config_offers_every_field_typed(tmp_path):
    import dagster as dg

    from assets.resources import SettingsResource

    fields = SettingsResource.model_fields
    assert set(fields) == {f.name for f in dataclasses.fields(Settings)}
    assert fields["epochs"].annotation == int | None and fields["learning_rate"].annotation == float | None
    assert fields["pooled"].annotation == bool | None and fields["symbols"].annotation == str | None

    seen = {}

    @dg.asset
    def probe(settings: SettingsResource) -> None:
        seen["settings"] = settings.settings()

    run_config = {"resources": {"settings": {"config": {"epochs": 4, "learning_rate": 0.01, "pooled": False,
                                                        "symbols": "ETHUSDT", "data_dir": str(tmp_path)}}}}
    assert dg.materialize([probe], resources={"settings": SettingsResource.configure_at_launch()},
                          run_config=run_config).success
    s = seen["settings"]
    assert (s.epochs, s.learning_rate, s.pooled, s.symbols, s.data_dir) == (4, 0.01, False, ("ETHUSDT",), tmp_path)
    assert s.window == Settings.window  # a field left unset keeps the environment / default
