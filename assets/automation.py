"""Jobs, schedules and sensors.

* ``daily_refresh``: every day at 00:15 UTC, the market assets, the
  partitioned feature and label tables and the image encodings of the month
  that holds the day that just closed
  (monthly partitions, assets/partitions.py: the month is re-read up to the last
  closed candle, one run per day, run key ``<month>@<day>``).
* ``nightly_retrain``: every night at 02:00 UTC, every ``models/*`` asset
  retrained on the refreshed data (its folds reach the last closed bar), then
  the baseline and model backtests, the comparison, the drift report and the
  signals. Its runs carry the tag
  ``trigger=schedule``, which ``models.registry`` records.
* ``signals_after_refresh`` (run-status sensor): after every successful
  ``daily_refresh`` run, the ``refresh_signals`` job: ``monitoring/drift``,
  ``signals/latest`` and ``signals/paper_ledger`` on the new candles. The
  nightly run refreshes them too, after the retrained models.
* ``drift_retrain`` (sensor): reads the newest ``monitoring/drift`` report of
  each symbol (``monitoring.drift`` / ``monitoring.accuracy``); when a feature
  drifted or a model's accuracy decayed it requests one run of the affected
  ``models/*`` assets, then ``backtest/models``, ``backtest/comparison`` and the signals,
  tagged ``trigger=drift``, with a run key derived from the reports (one report
  never triggers two runs), a cursor of the reports already judged and a
  cool-down (``drift_cooldown_hours``) between two drift retrains. Otherwise
  it skips and says why.

Time is the settings' clock (:meth:`pipeline.config.Settings.now`): the wall clock, or
``CONVTRADE_CLOCK`` in a replay (tests/monitoring/test_replay_through_schedules.py ticks these
schedules and the sensor through a simulated month). The sensor stamps each drift run with the time
it decided (tag ``convtrade/decided_at``), and the cool-down counts from that stamp, so a replay's
cool-down runs on the replayed clock, not on when the run was created.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import dagster as dg

from assets.partitions import HISTORY_START, market_partitions, month_key
from assets.resources import SettingsResource, WarehouseResource
from assets.training import TRIGGER_TAG, model_key
from pipeline.config import Settings
from pipeline.monitoring.drift import DriftThresholds, Verdict, latest_verdicts

# The encodings are partitioned like the candles: the daily refresh rebuilds the month's images (before the
# 02:00 retrain reads them), so the nightly job holds no partitioned asset.
PARTITIONED_GROUPS = ("market", "staging", "features", "labels", "encodings")
NIGHTLY_GROUPS = ("models", "backtest", "monitoring", "signals")
# Refreshed after every successful daily_refresh run (sensor signals_after_refresh).
AFTER_REFRESH_GROUPS = ("monitoring", "signals")


def build_automation(partitioned_groups=PARTITIONED_GROUPS, nightly_groups=NIGHTLY_GROUPS,
                     after_refresh_groups=AFTER_REFRESH_GROUPS):
    """The jobs, schedules and sensors for the given asset groups."""
    daily_refresh = dg.define_asset_job(
        "daily_refresh",
        selection=dg.AssetSelection.groups(*partitioned_groups),
        partitions_def=market_partitions,
        description="Ingest the month that holds the day that just closed (to its last closed candle) and rebuild "
                    "its features, labels and image encodings.",
    )
    nightly_retrain = dg.define_asset_job(
        "nightly_retrain",
        selection=dg.AssetSelection.groups(*nightly_groups),
        description="Retrain every architecture and re-run the backtests and the comparison on the refreshed data.",
        tags={"trigger": "schedule"},
    )
    schedules = [
        daily_refresh_schedule(daily_refresh),
        dg.ScheduleDefinition(
            name="nightly_retrain_schedule",
            job=nightly_retrain,
            cron_schedule="0 2 * * *",
            execution_timezone="UTC",
        ),
    ]
    refresh_signals = dg.define_asset_job(
        "refresh_signals",
        selection=dg.AssetSelection.groups(*after_refresh_groups),
        description="Drift report, newest signals and the paper ledger on the candles just ingested.",
    )

    @dg.run_status_sensor(
        name="signals_after_refresh",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[daily_refresh],
        request_job=refresh_signals,
        description="After each successful daily_refresh run: monitoring/drift, signals/latest and "
                    "signals/paper_ledger (one run per refresh run).",
    )
    def signals_after_refresh(context: dg.RunStatusSensorContext):
        return dg.RunRequest(run_key=f"after:{context.dagster_run.run_id}", tags={TRIGGER_TAG: "schedule"})

    return ([daily_refresh, nightly_retrain, refresh_signals], schedules,
            [drift_retrain_sensor, signals_after_refresh])


def daily_refresh_schedule(job) -> dg.ScheduleDefinition:
    """00:15 UTC every day: the monthly partition holding yesterday (a monthly partition's own
    schedule would run once a month)."""

    @dg.schedule(name="daily_refresh_schedule", job=job, cron_schedule="15 0 * * *", execution_timezone="UTC",
                 description="Every day at 00:15 UTC: the month holding the day that just closed, "
                             "to its last closed candle.")
    def _schedule(context: dg.ScheduleEvaluationContext):
        when = context.scheduled_execution_time or Settings.from_env().now()  # None outside a tick
        yesterday = (when.astimezone(dt.timezone.utc) - dt.timedelta(days=1)).date()
        if yesterday < HISTORY_START:
            return dg.SkipReason(f"{yesterday} is before CONVTRADE_START ({HISTORY_START}): nothing to refresh")
        key = month_key(yesterday)
        return dg.RunRequest(run_key=f"{key}@{yesterday}", partition_key=key)

    return _schedule


# What a drift retrain refreshes after the affected models (the model backtests and the comparison).
DRIFT_DOWNSTREAM = (dg.AssetKey(["backtest", "models"]), dg.AssetKey(["backtest", "comparison"]),
                    dg.AssetKey(["signals", "latest"]), dg.AssetKey(["signals", "paper_ledger"]))
DRIFT_REPORT_TAG = "convtrade/drift_reports"
DECIDED_AT_TAG = "convtrade/decided_at"  # the sensor's clock when it requested the run (epoch seconds)


def _last_drift_run(instance: dg.DagsterInstance) -> float | None:
    """When the newest run tagged ``trigger=drift`` in the instance was decided (epoch seconds): its
    ``convtrade/decided_at`` tag, or its creation time for a drift run launched by hand."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={TRIGGER_TAG: "drift"}), limit=1)
    if not records:
        return None
    decided = records[0].dagster_run.tags.get(DECIDED_AT_TAG)
    try:
        return float(decided) if decided is not None else records[0].create_timestamp.timestamp()
    except ValueError:
        raise ValueError(f"run {records[0].dagster_run.run_id}: tag {DECIDED_AT_TAG}={decided!r} is not epoch "
                         "seconds") from None


def drift_decision(verdicts: list[Verdict], cursor: str | None, now: float, cooldown_hours: float,
                   last_run: float | None = None) -> dg.SensorResult:
    """The drift sensor's answer for the newest reports (pure: the sensor passes the clock and the instance's
    newest drift run). Cursor: ``{"seen": {symbol: report id}, "last_retrain": epoch seconds}``."""
    state = json.loads(cursor) if cursor else {}
    seen = dict(state.get("seen", {}))
    last = max([t for t in (state.get("last_retrain"), last_run) if t is not None], default=None)
    if not verdicts:
        return dg.SensorResult(skip_reason="no drift report yet: materialize monitoring/drift (after the models)",
                               cursor=cursor)
    new = [v for v in verdicts if seen.get(v.symbol) != v.report_id]
    if not new:
        return dg.SensorResult(
            skip_reason="no new drift report: " + ", ".join(v.report_id for v in verdicts) + " already judged",
            cursor=cursor)
    triggered = [v for v in new if v.triggered]
    if not triggered:
        seen.update({v.symbol: v.report_id for v in new})
        return dg.SensorResult(skip_reason="; ".join(v.reason() for v in new),
                               cursor=json.dumps({**state, "seen": seen}))
    if last is not None and now - last < cooldown_hours * 3600:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last + cooldown_hours * 3600))
        return dg.SensorResult(
            skip_reason=f"cool-down: the last drift retrain was {(now - last) / 3600:.1f} h ago "
                        f"(< {cooldown_hours:g} h); next allowed after {until}. Pending: "
                        + "; ".join(v.reason() for v in triggered),
            cursor=cursor)  # the reports stay unjudged: they trigger once the cool-down is over
    architectures = sorted({a for v in triggered for a in v.affected_models})
    reports = sorted(v.report_id for v in triggered)
    request = dg.RunRequest(
        run_key="drift:" + "+".join(reports),
        asset_selection=[*(model_key(a) for a in architectures), *DRIFT_DOWNSTREAM],
        tags={TRIGGER_TAG: "drift", DRIFT_REPORT_TAG: ",".join(reports), DECIDED_AT_TAG: f"{now:.0f}"},
    )
    seen.update({v.symbol: v.report_id for v in new})
    return dg.SensorResult(run_requests=[request], cursor=json.dumps({"seen": seen, "last_retrain": now}))


@dg.sensor(
    name="drift_retrain",
    minimum_interval_seconds=300,
    target=dg.AssetSelection.groups("models") | dg.AssetSelection.assets(*DRIFT_DOWNSTREAM),
    description="Retrains the affected models/* assets (then backtest/models, backtest/comparison and the "
                "signals) when the newest monitoring/drift report shows feature drift or accuracy decay; tag "
                "trigger=drift, one run per report, a cool-down of drift_cooldown_hours between drift retrains.",
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource,
                         warehouse: WarehouseResource) -> dg.SensorResult:
    cfg = settings.settings()
    thresholds = DriftThresholds.from_settings(cfg)
    verdicts = latest_verdicts(warehouse.warehouse(), thresholds)
    return drift_decision(verdicts, context.cursor, cfg.now().timestamp(), thresholds.cooldown_hours,
                          _last_drift_run(context.instance))
