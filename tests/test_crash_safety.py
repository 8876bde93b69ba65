"""Issue 17: a killed run never blocks the next one, a waiting run stops on SIGTERM, the file reader names
the file and line of every broken candle rule, report paths are stored relative to DATA_DIR.

The two end-to-end tests run ``convtrade demo --only market`` (ingest of one symbol over three days, no
dbt, no training) in subprocesses on a temporary DAGSTER_HOME and DATA_DIR.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import run_safety
from pipeline.backtest.tables import resolve_report_path, stored_report_path
from pipeline.market.base import MarketDataError
from pipeline.market.files import read_candle_file
from pipeline.market.schemas import CANDLE_RULES
from pipeline.warehouse import Warehouse

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RAW_TABLES = ("raw.candles", "raw.funding", "raw.open_interest", "raw.orderbook")
STARTUP_TIMEOUT_S = 400  # loading the definitions on a busy 2-core machine


# -- helpers ---------------------------------------------------------------------------------------


def _home(folder: Path) -> Path:
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster_instance.yaml", home / "dagster.yaml")
    return home


def _env(folder: Path, home: Path) -> dict[str, str]:
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).date().isoformat()
    return {**os.environ, "DAGSTER_HOME": str(home), "DATA_DIR": str(folder / "data"),
            "CONVTRADE_START": start, "CONVTRADE_SYMBOLS": "BTCUSDT", "CONVTRADE_INTERVALS": "60"}


class Demo:
    """``convtrade demo --only market`` in its own process group, its output collected with timestamps."""

    def __init__(self, env: dict[str, str]):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "demo", "--only", "market"], env=env, cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), (
                f"demo ended (rc {self.proc.returncode}) before printing {text!r}:\n{self.output[-4000:]}")
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{self.output[-4000:]}"
            time.sleep(0.2)

    def finish(self, timeout: float = STARTUP_TIMEOUT_S) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def main_thread_state(self) -> str:
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    wh = Warehouse(data_dir / "warehouse.duckdb")
    out = {}
    for table in RAW_TABLES:
        frame = wh.query(f"select * exclude (ingested_at) from {table}")
        out[table] = frame.sort(frame.columns)
    return out


LATER_WRITERS = {"raw__funding", "raw__open_interest", "raw__orderbook"}


def _claimed_steps(instance: dg.DagsterInstance, pool: str = "warehouse") -> set[str]:
    return {slot.step_key for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}


def _claimed_by(instance: dg.DagsterInstance, pool: str = "warehouse") -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}


def _pending_of(instance: dg.DagsterInstance, run_id: str, pool: str = "warehouse") -> list:
    return [p for p in instance.event_log_storage.get_concurrency_info(pool).pending_steps if p.run_id == run_id]


# -- end to end ------------------------------------------------------------------------------------


def test_killed_demo_does_not_block_the_next_and_its_rerun_equals_a_clean_run(tmp_path):
    home = _home(tmp_path / "crashed")
    env = _env(tmp_path / "crashed", home)
    clean_home = _home(tmp_path / "clean")
    clean = Demo(_env(tmp_path / "clean", clean_home))  # the reference, alongside
    with dg.DagsterInstance.from_config(str(home)) as instance:  # (creates the storage before the demo)
        first = Demo(env)
        # SIGKILL while a writer after raw.candles holds the warehouse slot: one table is new, the
        # others are not written yet, and Dagster still sees the run STARTED with the slot claimed
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _claimed_steps(instance) & LATER_WRITERS:
            assert first.proc.poll() is None, f"the demo ended before it could be killed:\n{first.output[-3000:]}"
            assert time.monotonic() < deadline, first.output[-3000:]
            time.sleep(0.02)
        os.killpg(first.proc.pid, signal.SIGKILL)
        assert first.finish(30) == -signal.SIGKILL
        (killed,) = instance.get_run_records()
        assert killed.dagster_run.status == dg.DagsterRunStatus.STARTED  # nobody told Dagster
        assert _claimed_by(instance) == {killed.dagster_run.run_id}

    second = Demo(env)
    assert second.finish() == 0, second.output[-4000:]
    assert clean.finish() == 0, clean.output[-4000:]
    assert "is gone" in second.output  # it says what it did about the dead run

    with dg.DagsterInstance.from_config(str(home)) as instance:
        dead = instance.get_run_by_id(killed.dagster_run.run_id)
        assert dead.status == dg.DagsterRunStatus.FAILURE
        failure = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert f"pid {killed.dagster_run.tags[run_safety.PID_TAG]}" in failure.message
        assert "killed" in failure.message
        assert not _claimed_by(instance) and not instance.event_log_storage.get_concurrency_run_ids()
        statuses = sorted(r.dagster_run.status.value for r in instance.get_run_records())
        assert statuses == ["FAILURE", "SUCCESS"]

    got, want = _tables(tmp_path / "crashed" / "data"), _tables(tmp_path / "clean" / "data")
    for table in RAW_TABLES:
        assert want[table].height > 0, table
        assert got[table].equals(want[table]), table


def test_sigterm_stops_a_demo_waiting_for_a_slot_within_seconds(tmp_path):
    home = _home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("warehouse")
        assert storage.claim_concurrency_slot("warehouse", "holder-run", "holder_step").is_claimed
    demo = Demo(_env(tmp_path, home))
    # it says which pool it waits for, who holds it and since when
    demo.wait_for("for pool 'warehouse' (limit 1), held by run holder-run (step holder_step, since ")
    states = []
    for _ in range(20):
        states.append(demo.main_thread_state())
        time.sleep(0.1)
    assert states.count("S") >= 10, f"the waiting demo does not sleep: states {''.join(states)}"

    sent = time.monotonic()
    os.kill(demo.proc.pid, signal.SIGTERM)
    rc = demo.finish(30)
    took = time.monotonic() - sent
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    assert rc == 130, demo.output[-3000:]
    assert demo.lines[-1].startswith("interrupted: "), demo.output[-3000:]
    assert "Traceback (most recent call last)" not in demo.output

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED
        assert not _pending_of(instance, record.dagster_run.run_id)  # its claim is withdrawn
        assert _claimed_by(instance) == {"holder-run"}  # the live holder keeps its slot
    assert not (tmp_path / "data" / "warehouse.duckdb").exists() or all(
        t.height == 0 for t in _tables(tmp_path / "data").values())


# -- the dead-run check, in process ----------------------------------------------------------------


@pytest.fixture
def instance(tmp_path):
    home = _home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _started_run(instance: dg.DagsterInstance, run_id: str, tags: dict[str, str]) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name="some_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags)
    instance.add_run(run)
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("warehouse")
    storage.claim_concurrency_slot("warehouse", run_id, "some_step")
    return run


def test_dead_runs_are_failed_and_their_slots_freed_live_ones_kept(instance):
    host = run_safety.launch_tags()[run_safety.HOST_TAG]
    dead = _started_run(instance, "dead-run", {run_safety.PID_TAG: str(_dead_pid()), run_safety.HOST_TAG: host})
    alive = _started_run(instance, "live-run", run_safety.launch_tags())  # this process: alive
    # a recycled pid: alive, but not the process that started the run
    recycled = _started_run(instance, "recycled-run", {**run_safety.launch_tags(), run_safety.PID_TAG: "1",
                                                       run_safety.PROCESS_START_TAG: "0"})
    elsewhere = _started_run(instance, "remote-run", {run_safety.PID_TAG: str(_dead_pid()),
                                                      run_safety.HOST_TAG: host + "-other"})
    result = run_safety.dead_run_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "dead-run" in result.skip_message
    status = {r: instance.get_run_by_id(r).status for r in ("dead-run", "live-run", "recycled-run", "remote-run")}
    assert status == {"dead-run": dg.DagsterRunStatus.FAILURE, "live-run": dg.DagsterRunStatus.STARTED,
                      "recycled-run": dg.DagsterRunStatus.FAILURE, "remote-run": dg.DagsterRunStatus.STARTED}
    assert "is gone" in instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].message
    assert not _pending_of(instance, dead.run_id) and not _pending_of(instance, recycled.run_id)
    assert _pending_of(instance, alive.run_id) and _pending_of(instance, elsewhere.run_id)
    assert run_safety.fail_dead_runs(instance) == []  # nothing left to do


def test_a_finished_run_still_holding_a_slot_is_freed(instance):
    run = _started_run(instance, "ended-run", run_safety.launch_tags())
    instance.report_run_failed(run, "ended elsewhere")
    assert _pending_of(instance, run.run_id)
    run_safety.fail_dead_runs(instance)
    assert not _pending_of(instance, run.run_id)


def test_after_an_interrupt_this_process_runs_are_failed_and_freed(instance):
    mine = _started_run(instance, "my-run", run_safety.launch_tags())
    other = _started_run(instance, "other-run", {**run_safety.launch_tags(), run_safety.PID_TAG: "1"})
    assert run_safety.release_own_runs(instance, run_safety.INTERRUPTED_MESSAGE) == [mine.run_id]
    assert instance.get_run_by_id(mine.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(other.run_id).status == dg.DagsterRunStatus.STARTED
    assert not _pending_of(instance, mine.run_id) and _pending_of(instance, other.run_id)


def test_definitions_register_the_dead_run_sensor():
    from assets.definitions import defs

    assert defs.get_sensor_def("fail_dead_runs") is run_safety.dead_run_sensor


def test_pool_wait_fix_matches_dagster(instance):
    """Fails when Dagster changes what install_pool_wait_fix relies on (then revisit the fix, or drop it
    if Dagster's wait loop sleeps on its own)."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    run_safety.install_pool_wait_fix()
    patched = InstanceConcurrencyContext.interval_to_next_pending_claim_check
    original = patched.__wrapped__
    run = _started_run(instance, "holder", run_safety.launch_tags())
    waiting = dg.DagsterRun(job_name="some_job", run_id="waiter", status=dg.DagsterRunStatus.STARTED)
    instance.add_run(waiting)
    with InstanceConcurrencyContext(instance, waiting) as context:
        assert context._instance is instance and context._run_id == "waiter"  # what the fix reads
        assert context.claim("warehouse", "step_a") is False  # the holder has the one slot
        assert context.has_pending_claims() and context.pending_claim_steps() == ["step_a"]
        # Dagster's own answer never asks the loop to sleep: the 100 %-CPU wait of issue 17
        assert original(context) <= 0
        assert patched(context) == run_safety.WAIT_TICK_S
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        time.sleep(1.1)  # past Dagster's first back-off
        assert context.claim("warehouse", "step_a") is True
        assert not context.has_pending_claims() and patched(context) == 0
        context.free_step("step_a")


def test_a_waiting_step_names_the_holder_and_fails_it_when_its_process_is_gone(instance, caplog):
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    host = run_safety.launch_tags()[run_safety.HOST_TAG]
    _started_run(instance, "dead-holder", {run_safety.PID_TAG: str(_dead_pid()), run_safety.HOST_TAG: host})
    waiting = dg.DagsterRun(job_name="some_job", run_id="waiter", status=dg.DagsterRunStatus.STARTED)
    instance.add_run(waiting)
    with InstanceConcurrencyContext(instance, waiting) as context:
        assert context.claim("warehouse", "step_a") is False
        reporter = run_safety._WaitReporter()
        with caplog.at_level("INFO", logger="convtrade.run_safety"):
            reporter.tick(instance, "waiter", ["step_a"])  # the first call starts the clock: no report yet
            assert "waiting" not in caplog.text
            reporter.since -= run_safety.WAIT_REPORT_AFTER_S
            reporter.tick(instance, "waiter", ["step_a"])
        assert "step_a waiting 5 s for pool 'warehouse' (limit 1), held by run dead-holder (step some_step, since " in caplog.text
        assert "run dead-holder's process is gone: marked failed, its slot freed" in caplog.text
        assert instance.get_run_by_id("dead-holder").status == dg.DagsterRunStatus.FAILURE
        stored = [e.message for e in instance.all_logs("waiter", of_type=dg.DagsterEventType.ENGINE_EVENT)]
        assert any("held by run dead-holder" in m for m in stored)  # also in the run's log (the UI)
        time.sleep(1.1)  # Dagster's first back-off
        assert context.claim("warehouse", "step_a") is True
        context.free_step("step_a")


# -- report paths, candle rules --------------------------------------------------------------------


def test_report_paths_are_stored_relative_to_data_dir(tmp_path):
    data = tmp_path / "data"
    report = data / "reports" / "backtests" / "x.html"
    assert stored_report_path(report, data) == "reports/backtests/x.html"
    assert stored_report_path(str(report), tmp_path / "other" / ".." / "data") == "reports/backtests/x.html"
    assert stored_report_path(tmp_path / "elsewhere.html", data) == str((tmp_path / "elsewhere.html").resolve())
    assert stored_report_path(None, data) is None
    moved = tmp_path / "moved"
    assert resolve_report_path("reports/backtests/x.html", moved) == moved / "reports" / "backtests" / "x.html"


HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _rows(n: int = 8) -> list[list[float]]:
    rows, price = [], 100.0
    for i in range(n):
        o, c = price, price + (1 if i % 2 else -0.5)
        rows.append([T0 + i * HOUR, o, max(o, c) + 0.25, min(o, c) - 0.25, c, 10.0 + i, 1000.0])
        price = c
    return rows


def _break(rule: str, row: list[float]) -> None:
    o, c = row[1], row[4]
    if rule == "prices > 0":
        row[1:5] = [-1.0, -1.0, -1.0, -1.0]  # consistent with the other rules, but not positive
    elif rule == "high >= max(open, close)":
        row[2] = max(o, c) - 0.1
        row[3] = min(row[3], row[2])
    elif rule == "low <= min(open, close)":
        row[3] = min(o, c) + 0.1
    elif rule == "volume >= 0":
        row[5] = -3.0
    else:
        raise AssertionError(f"the test does not know how to break the new rule {rule!r}: add it here")


@pytest.mark.parametrize("rule", [r.text for r in CANDLE_RULES])
def test_file_reader_names_file_and_line_for_every_candle_rule(tmp_path, rule):
    rows = _rows()
    _break(rule, rows[3])  # line 5 (the header is line 1)
    path = tmp_path / "BTCUSDT_60.csv"
    path.write_text("ts,open,high,low,close,volume,turnover\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    with pytest.raises(MarketDataError) as err:
        read_candle_file(path, "BTCUSDT", "60")
    message = str(err.value)
    assert message.startswith(f"{path}, line 5: ") and f"breaks the rule {rule}" in message


def test_dagster_sqlite_history_is_written_without_fsync_unless_asked(tmp_path):
    """Loading the definitions turns off the fsync per event of Dagster's sqlite storages (setting
    dagster_fsync); the run history still survives the process (a new instance reads the run back)."""
    import assets.definitions  # noqa: F401  (installs the hook, as in every process that loads the code)
    from pipeline.config import Settings

    assert run_safety.install_sqlite_without_fsync(Settings()) is True
    assert run_safety.install_sqlite_without_fsync(Settings(dagster_fsync=True)) is False
    home = tmp_path / "home"
    home.mkdir()
    from dagster._core.instance.ref import InstanceRef  # the public API opens only $DAGSTER_HOME

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        with instance.run_storage.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 0  # OFF
        run = instance.create_run_for_job(dg.GraphDefinition("g", node_defs=[]).to_job())
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as again:
        assert again.get_run_by_id(run.run_id) is not None
