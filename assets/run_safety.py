"""A killed run never blocks the next one.

Dagster keeps a run ``STARTED`` and its pool slots claimed until the run's own
process says otherwise; a process killed with SIGKILL (an out-of-memory kill, a
closed laptop, a container stop) never does, and the ``warehouse`` pool (limit 1)
then blocks every later writer. This module:

- tags the runs we launch with the process that runs them (:func:`launch_tags`:
  pid, host and the process's start time, so a recycled pid is not mistaken for
  the run);
- :func:`fail_dead_runs`: finds ``STARTED``/``STARTING`` runs whose process is
  gone, marks them failed with a message that says why, and frees the pool slots
  of every finished run that still holds one. ``materialize_all`` (so ``convtrade
  demo``) calls it before it launches anything, and :data:`dead_run_sensor` calls
  it every 30 s under ``dagster dev`` (the daemon's own run monitoring cannot check
  the worker of a locally launched run);
- :func:`install_pool_wait_fix`: a step waiting for a pool slot sleeps instead of
  spinning a core, says at INFO which run holds the slot and since when, fails a
  dead holder, and stops within a second on SIGINT/SIGTERM.

- :func:`install_sqlite_without_fsync`: Dagster's sqlite run history is written
  with ``PRAGMA synchronous=OFF`` (setting ``dagster_fsync``). A killed process
  loses nothing by it: its writes are already in the operating system's cache.
  Only a power cut or an OS crash may lose the newest events or damage the run
  history (never the warehouse, which DuckDB writes itself). Dagster's default
  fsyncs 2 to 4 times per event (~10 ms each on an ordinary disk), which made
  that bookkeeping most of a history load's time (issue 15's profile).

Only public instance methods are used (``get_run_records``, ``report_run_failed``,
``report_engine_event``, ``all_logs``, ``event_log_storage``'s concurrency calls),
except in :func:`install_pool_wait_fix`, the one place that touches Dagster internals.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass

import dagster as dg

log = logging.getLogger("convtrade.run_safety")

PID_TAG = "convtrade/pid"
HOST_TAG = "convtrade/host"
PROCESS_START_TAG = "convtrade/process_start"
# The first report that a step waits for a slot comes after this many seconds, then one every interval.
WAIT_REPORT_AFTER_S = 5.0
WAIT_REPORT_INTERVAL_S = 30.0
# While a step waits, the loop wakes this often (to see SIGINT/SIGTERM); the slot itself is polled on
# Dagster's own back-off (1 s growing to 15 s).
WAIT_TICK_S = 0.5

INTERRUPTED_MESSAGE = ("Interrupted (SIGINT/SIGTERM): the run stopped and its pool slots were freed; the tables it "
                       "was writing keep their last committed version.")

WAIT_INTERRUPTED_MESSAGE = "SIGINT/SIGTERM while waiting for a pool slot: run canceled before any step ran"

ACTIVE_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
FINISHED_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def launch_tags() -> dict[str, str]:
    """Run tags that name this process: add them to every run launched from it."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if (start := _process_start(os.getpid())) is not None:
        tags[PROCESS_START_TAG] = start
    return tags


@dataclass(frozen=True)
class RunProcess:
    pid: int
    host: str | None  # None: not recorded (a run worker of this instance, on this host)
    start: str | None

    def alive(self) -> bool:
        """Whether the process still runs (False for a recycled pid whose start time differs)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        if self.start is not None:
            now = _process_start(self.pid)
            if now is not None and now != self.start:
                return False
        return True


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process that executes ``run``: from our tags, else from Dagster's "process (pid: N)" engine event."""
    tags = run.tags
    if PID_TAG in tags:
        try:
            return RunProcess(int(tags[PID_TAG]), tags.get(HOST_TAG), tags.get(PROCESS_START_TAG))
        except ValueError:
            return None
    # A run launched by `dagster dev` (a run worker) or by someone else's `dg.materialize`: Dagster
    # records its pid in an engine event ("Started process for run (pid: N)" / "Executing steps in
    # process (pid: N)"). The instance is a local one (SQLite under DAGSTER_HOME), so the pid is local.
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = getattr(data, "metadata", {}).get("pid") if data is not None else None
        if pid is not None:
            try:
                return RunProcess(int(pid.value), None, None)
            except (TypeError, ValueError):
                continue
    return None


def _is_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The (gone) process of ``run`` when it is provably dead on this host, else None."""
    proc = run_process(instance, run)
    if proc is None or proc.pid == os.getpid():
        return None
    if proc.host is not None and proc.host != socket.gethostname():
        return None  # another machine's process: we cannot tell
    return None if proc.alive() else proc


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Free the pool slots (and withdraw the pending claims) of ``run_id``; whether it had any."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or run_id not in storage.get_concurrency_run_ids():
        return False
    storage.free_concurrency_slots_for_run(run_id)
    return True


def fail_if_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Mark ``run`` failed and free its slots when it is STARTED/STARTING but its process is gone."""
    if run.status not in ACTIVE_STATUSES:
        return None
    proc = _is_dead(instance, run)
    if proc is None:
        return None
    where = f" on {proc.host}" if proc.host else ""
    message = (
        f"Run {run.run_id} was {run.status.value} but its process (pid {proc.pid}{where}) is gone: it was "
        "killed (SIGKILL, out of memory, machine stopped) before it could report an end. Marked failed by "
        "convtrade's dead-run check; its pool slots were freed. Its tables hold the last committed version."
    )
    # re-read: the run may have ended between the listing and now
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.status not in ACTIVE_STATUSES:
        return None
    instance.report_run_failed(current, message)
    _free_slots(instance, run.run_id)
    log.warning(message)
    return message


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail every STARTED/STARTING run whose process is gone; free the slots finished runs still hold.

    Returns the ids of the runs marked failed.
    """
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        if fail_if_dead(instance, record.dagster_run):
            failed.append(record.dagster_run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=list(holders))):
                if record.dagster_run.status in FINISHED_STATUSES and _free_slots(instance, record.dagster_run.run_id):
                    log.info("freed the pool slots still held by finished run %s (%s)",
                             record.dagster_run.run_id, record.dagster_run.status.value)
    return failed


def release_own_runs(instance: dg.DagsterInstance, message: str) -> list[str]:
    """After an interrupt: fail the runs of this process still marked active and free their slots."""
    released = []
    me = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    for record in instance.get_run_records(filters=dg.RunsFilter(tags=me)):
        run = record.dagster_run
        if run.status in ACTIVE_STATUSES:
            instance.report_run_failed(run, message)
        if _free_slots(instance, run.run_id):
            released.append(run.run_id)
    return released


def describe_wait(instance: dg.DagsterInstance, run_id: str, waiting_steps: list[str], since: float) -> str | None:
    """One line: which of ``run_id``'s steps wait for which pool, which run holds it and since when."""
    storage = instance.event_log_storage
    parts = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        mine = [p.step_key for p in info.pending_steps if p.run_id == run_id and p.assigned_timestamp is None]
        if not mine:
            continue
        holders = []
        for p in info.pending_steps:
            if p.assigned_timestamp is None or p.run_id == run_id:
                continue
            held = p.assigned_timestamp
            if held.tzinfo is None:
                held = held.replace(tzinfo=dt.timezone.utc)
            holders.append(f"run {p.run_id} (step {p.step_key}, since {held:%Y-%m-%d %H:%M:%S} UTC)")
        held_by = ", ".join(holders) if holders else "no run (the slot is being handed over)"
        parts.append(f"{', '.join(mine)} waiting {time.time() - since:.0f} s for pool '{pool}' "
                     f"(limit {info.slot_count}), held by {held_by}")
    if not parts and waiting_steps:
        parts.append(f"{', '.join(waiting_steps)} waiting {time.time() - since:.0f} s for a pool slot")
    return "; ".join(parts) or None


def _holder_runs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    storage = instance.event_log_storage
    held = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        held |= {p.run_id for p in info.pending_steps if p.assigned_timestamp is not None and p.run_id != run_id}
    return sorted(held)


class _WaitReporter:
    """Rate-limits the wait reports of one run's concurrency context."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.last: float | None = None

    def tick(self, instance: dg.DagsterInstance, run_id: str, steps: list[str]) -> None:
        now = time.time()
        if self.since is None:
            self.since = now
        due = WAIT_REPORT_AFTER_S if self.last is None else WAIT_REPORT_INTERVAL_S
        if now - (self.last or self.since) < due:
            return
        self.last = now
        message = describe_wait(instance, run_id, steps, self.since)
        # a holder that died while we waited: fail it, so its slot frees now
        for holder in _holder_runs(instance, run_id):
            run = instance.get_run_by_id(holder)
            if run is not None and fail_if_dead(instance, run):
                message = f"{message}; run {holder}'s process is gone: marked failed, its slot freed"
        if message:
            log.info(message)
            try:
                run = instance.get_run_by_id(run_id)
                if run is not None:
                    instance.report_engine_event(message, run)
            except Exception:  # the report is a courtesy; never let it break the wait
                log.debug("could not store the wait report", exc_info=True)

    def reset(self) -> None:
        self.since = self.last = None


_FIX_INSTALLED = {"done": False}


def install_pool_wait_fix() -> None:
    """Make a step that waits for a pool slot sleep, report and stop on a signal (idempotent).

    The one place that touches Dagster internals (checked against dagster 1.13; see
    tests/test_crash_safety.py::test_pool_wait_fix_matches_dagster, which fails when they change):

    - ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
      ``min([0, *timeouts])``, never > 0, so the in-process executor's wait loop
      (``ActiveExecution.sleep_til_ready``) never sleeps: 100 % of a core for as long as
      the slot stays taken. Here it returns a short positive sleep while claims are pending.
    - The loop only records SIGINT/SIGTERM (``capture_interrupts``) and checks them at the
      start of a step's compute, which a waiting step never reaches. Here a recorded
      interrupt raises ``DagsterExecutionInterruptedError`` from the wait, so the run fails
      at once; Dagster then frees the pending claims and marks the run failed.
    - Dagster says "waiting for a slot" once and then every 5 minutes, without the holder.
      Here :class:`_WaitReporter` says which run holds the slot and since when, every 30 s.
    """
    if _FIX_INSTALLED["done"]:
        return
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
    from dagster._utils.interrupts import pop_captured_interrupt

    original = InstanceConcurrencyContext.interval_to_next_pending_claim_check

    def interval_to_next_pending_claim_check(self) -> float:
        due = original(self)  # <= 0: a claim is due now (< 0) or all are in the future (0)
        reporter = self.__dict__.setdefault("_convtrade_wait", _WaitReporter())
        if not self.has_pending_claims():
            reporter.reset()
            return due
        if pop_captured_interrupt():
            # CANCELING first: Dagster then ends the run CANCELED with one log line (a plain interrupt
            # is logged as an unexpected failure with its stack trace).
            run = self._instance.get_run_by_id(self._run_id)
            if run is not None and run.status in ACTIVE_STATUSES:
                self._instance.report_run_canceling(run, message=WAIT_INTERRUPTED_MESSAGE)
            raise dg.DagsterExecutionInterruptedError(WAIT_INTERRUPTED_MESSAGE)
        reporter.tick(self._instance, self._run_id, self.pending_claim_steps())
        return 0.0 if due < 0 else WAIT_TICK_S

    interval_to_next_pending_claim_check.__wrapped__ = original
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check
    _FIX_INSTALLED["done"] = True


@dg.sensor(
    name="fail_dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs failed whose process was killed, and frees their pool slots.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    failed = fail_dead_runs(context.instance)
    return dg.SkipReason(f"marked {len(failed)} dead run(s) failed: {', '.join(failed)}" if failed
                         else "no dead run")


_SQLITE_HOOK: list = []


def install_sqlite_without_fsync(settings=None) -> bool:
    """Every sqlite connection SQLAlchemy opens in this process (Dagster's run, event-log and schedule
    storages: nothing else here uses SQLAlchemy with sqlite) runs ``PRAGMA synchronous=OFF``; a no-op
    when the ``dagster_fsync`` setting is true. Installed once per process; returns whether it is on."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from pipeline.config import Settings

    if (settings or Settings.from_env()).dagster_fsync:
        return False
    if not _SQLITE_HOOK:
        def _no_fsync(dbapi_connection, _record) -> None:
            if isinstance(dbapi_connection, sqlite3.Connection):
                dbapi_connection.execute("PRAGMA synchronous=OFF")

        event.listen(Engine, "connect", _no_fsync)
        _SQLITE_HOOK.append(_no_fsync)
    return True
