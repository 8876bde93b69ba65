"""Run the dbt_features project from plain Python (tests, benchmarks, `make setup`).

Inside the dbt process, the profile reads the warehouse from
``CONVTRADE_WAREHOUSE_PATH`` and an incremental run's window from
``CONVTRADE_FEATURES_START`` / ``_END`` (environment variables rather than dbt
vars, which would force dbt to reparse the whole project on every new window);
the candle_features model reads the gap policy from ``CONVTRADE_GAP_POLICY`` /
``CONVTRADE_MAX_FILL_BARS`` (through pipeline.config.Settings).
Callers never set them in their own process: they pass
:func:`launcher_args` on the dbt command line, and the launcher
(:mod:`pipeline.dbt_runner.launcher`) sets them in the dbt process only.
The Dagster asset does the same through ``DbtCliResource.cli``.

``python -m pipeline.dbt_runner.invoke parse`` writes the manifest Dagster
loads (``make setup`` runs it).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.core.timegrid import utc_naive

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_features"
WAREHOUSE_ENV = "CONVTRADE_WAREHOUSE_PATH"
WINDOW_ENV = ("CONVTRADE_FEATURES_START", "CONVTRADE_FEATURES_END")
GAPS_ENV = ("CONVTRADE_GAP_POLICY", "CONVTRADE_MAX_FILL_BARS")


def format_bound(value: dt.datetime | dt.date | str | None) -> str:
    """A window bound as dbt expects it: 'YYYY-MM-DD HH:MM:SS' in UTC ('' for none)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return utc_naive(value).strftime("%Y-%m-%d %H:%M:%S")


def dbt_environment(
    warehouse_path: str | Path,
    start: dt.datetime | dt.date | str | None = None,
    end: dt.datetime | dt.date | str | None = None,
) -> dict[str, str]:
    """The environment variables one dbt invocation needs (absolute warehouse path, window).

    A run with a window (a daily partition) writes no JSON artifacts
    (manifest.json, run_results.json: DBT_WRITE_JSON=false): nothing reads them,
    and the manifest Dagster loads comes from `dbt parse`. Partial parsing
    state (partial_parse.msgpack) is still kept.
    """
    window = (format_bound(start), format_bound(end))
    return {
        WAREHOUSE_ENV: str(Path(warehouse_path).resolve()),
        WINDOW_ENV[0]: window[0],
        WINDOW_ENV[1]: window[1],
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_WRITE_JSON": "false" if any(window) else "true",
    }


LAUNCHER_OPTIONS = ("--convtrade-warehouse=", "--convtrade-window=", "--convtrade-gaps=")


def launcher_args(
    warehouse_path: str | Path,
    start: dt.datetime | dt.date | str | None = None,
    end: dt.datetime | dt.date | str | None = None,
    gaps: tuple[str, int] | None = None,
) -> list[str]:
    """Options for the dbt launcher: the warehouse, the window and (optionally) the gap policy of one invocation.

    ``gaps`` is (Settings.gap_policy, Settings.max_fill_bars); without it the
    dbt process reads them from its environment, like Settings.from_env. The
    launcher removes the options before dbt parses its arguments and turns
    them into :func:`dbt_environment` inside the dbt process.
    """
    args = [
        f"{LAUNCHER_OPTIONS[0]}{Path(warehouse_path).resolve()}",
        f"{LAUNCHER_OPTIONS[1]}{format_bound(start)}/{format_bound(end)}",
    ]
    if gaps is not None:
        args.append(f"{LAUNCHER_OPTIONS[2]}{gaps[0]}/{int(gaps[1])}")
    return args


def environment_from_launcher_args(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``argv`` into dbt's own arguments and the environment the launcher options ask for."""
    rest, warehouse, window, gaps = [], None, ("", ""), {}
    for arg in argv:
        if arg.startswith(LAUNCHER_OPTIONS[0]):
            warehouse = arg[len(LAUNCHER_OPTIONS[0]):]
        elif arg.startswith(LAUNCHER_OPTIONS[1]):
            start, sep, end = arg[len(LAUNCHER_OPTIONS[1]):].partition("/")
            if not sep:
                raise ValueError(f"{arg!r}: expected {LAUNCHER_OPTIONS[1]}START/END (either may be empty)")
            window = (start, end)
        elif arg.startswith(LAUNCHER_OPTIONS[2]):
            policy, sep, max_fill = arg[len(LAUNCHER_OPTIONS[2]):].partition("/")
            if not sep or not max_fill.isdigit():
                raise ValueError(f"{arg!r}: expected {LAUNCHER_OPTIONS[2]}POLICY/MAX_FILL_BARS, e.g. fill/12")
            gaps = dict(zip(GAPS_ENV, (policy, max_fill)))
        else:
            rest.append(arg)
    if warehouse is None:
        return rest, gaps
    return rest, {**dbt_environment(warehouse, *window), **gaps}


LAUNCHER_PATH = DBT_PROJECT_DIR / "target" / "dbt-fast-exit"


def launcher_script() -> str:
    """The text of the `dbt` launcher for this interpreter (see pipeline.dbt_runner.launcher)."""
    return f"#!{sys.executable}\nfrom pipeline.dbt_runner.launcher import main\n\nmain()\n"


def dbt_executable() -> str:
    """An executable `dbt` for this interpreter's environment: the fast-exit launcher.

    Written (atomically) under dbt_features/target/ when missing or stale; falls
    back to the environment's `dbt` if it cannot be written.
    """
    text = launcher_script()
    try:
        if not LAUNCHER_PATH.exists() or LAUNCHER_PATH.read_text() != text:
            LAUNCHER_PATH.parent.mkdir(parents=True, exist_ok=True)
            partial = LAUNCHER_PATH.with_name(f"{LAUNCHER_PATH.name}.{os.getpid()}")
            partial.write_text(text)
            partial.chmod(0o755)
            os.replace(partial, LAUNCHER_PATH)
        return str(LAUNCHER_PATH)
    except OSError:
        candidate = Path(sys.executable).with_name("dbt")
        return str(candidate) if candidate.exists() else "dbt"


def run_dbt(
    args: Sequence[str],
    warehouse_path: str | Path,
    start: dt.datetime | dt.date | str | None = None,
    end: dt.datetime | dt.date | str | None = None,
    extra_env: Mapping[str, str] | None = None,
    gaps: tuple[str, int] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``dbt <args>`` on the warehouse; a failure raises with the end of dbt's output.

    ``gaps``: (gap_policy, max_fill_bars) for this run (default: this process's CONVTRADE_* environment).
    """
    env = {**os.environ, "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR), **(extra_env or {})}
    command = [dbt_executable(), *args, *launcher_args(warehouse_path, start, end, gaps), "--project-dir",
               str(DBT_PROJECT_DIR)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=DBT_PROJECT_DIR)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(
            f"`dbt {' '.join(args)}` failed on {warehouse_path} (window {format_bound(start)!r} .. "
            f"{format_bound(end)!r}), exit code {result.returncode}:\n{tail}"
        )
    return result


MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"


def parse_project() -> Path:
    """`dbt parse` so target/manifest.json exists (Dagster loads the assets from it).

    Parsing opens no warehouse (the profile falls back to an in-memory database).
    """
    env = {**os.environ, "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR)}
    env.pop(WAREHOUSE_ENV, None)
    command = [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=DBT_PROJECT_DIR)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"`dbt parse` of {DBT_PROJECT_DIR} failed, exit code {result.returncode}:\n{tail}")
    return MANIFEST_PATH


if __name__ == "__main__":
    if sys.argv[1:] != ["parse"]:
        print("usage: python -m pipeline.dbt_runner.invoke parse   (writes dbt_features/target/manifest.json)")
        sys.exit(2)
    print(f"dbt manifest written: {parse_project()}")
