"""`dbt` as a process that ends as soon as its command is done.

The dbt CLI spends about half a second after its last event tearing down the
interpreter (thousands of modules and objects). This entry point runs the
same click command (``dbt.cli.main.cli``), then closes the DuckDB database
(dbt-duckdb keeps one per process; closing checkpoints the WAL into the
file, as a normal exit does), flushes logs and streams, and leaves with the
command's exit code through ``os._exit``.

``--version`` answers from the installed package, with no network look-up.

The options of :func:`pipeline.dbt_runner.invoke.launcher_args`
(``--convtrade-warehouse=PATH``, ``--convtrade-window=START/END``) are taken
off the command line and set as the environment the profile and macros read,
in this process only.

``invoke.dbt_executable()`` points the subprocess runner and dagster-dbt's
``DbtCliResource`` at a small script that calls :func:`main`.
"""

from __future__ import annotations

import logging
import os
import sys


def _exit_code(done: SystemExit) -> int:
    if done.code is None:
        return 0
    return done.code if isinstance(done.code, int) else 1


def close_duckdb() -> None:
    """Close dbt-duckdb's database handle (a no-op when no command opened one)."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
        DuckDBConnectionManager._ENV = None


def print_installed_version() -> None:
    """``dbt --version`` without its PyPI look-up for a newer release (dagster-dbt calls it at start-up)."""
    from dbt.version import __version__

    print(f"Core:\n  - installed: {__version__}")


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print_installed_version()
        sys.stdout.flush()
        os._exit(0)
    from dbt.cli.main import cli

    from pipeline.dbt_runner.invoke import environment_from_launcher_args

    args, environment = environment_from_launcher_args(sys.argv[1:])
    os.environ.update(environment)
    code = 0
    try:
        cli(args=args, prog_name="dbt")
    except SystemExit as done:
        code = _exit_code(done)
    finally:
        try:
            close_duckdb()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
