"""Jobs, schedules and sensors.

* ``daily_refresh``: every day at 00:15 UTC, the market assets (and the
  partitioned feature tables) for the day that just closed.
* ``nightly_retrain``: every night at 02:00 UTC, every ``models/*`` asset
  retrained on the refreshed data (its folds reach the last closed bar), then
  the baseline and model backtests and the comparison. Its runs carry the tag
  ``trigger=schedule``, which ``models.registry`` records.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import daily_partitions

PARTITIONED_GROUPS = ("market", "staging", "features", "labels")
NIGHTLY_GROUPS = ("models", "backtest")


def build_automation(partitioned_groups=PARTITIONED_GROUPS, nightly_groups=NIGHTLY_GROUPS):
    """The jobs, schedules and sensors for the given asset groups."""
    daily_refresh = dg.define_asset_job(
        "daily_refresh",
        selection=dg.AssetSelection.groups(*partitioned_groups),
        partitions_def=daily_partitions,
        description="Ingest the day that just closed and rebuild its features.",
    )
    nightly_retrain = dg.define_asset_job(
        "nightly_retrain",
        selection=dg.AssetSelection.groups(*nightly_groups),
        description="Retrain every architecture and re-run the backtests and the comparison on the refreshed data.",
        tags={"trigger": "schedule"},
    )
    schedules = [
        dg.build_schedule_from_partitioned_job(
            daily_refresh, hour_of_day=0, minute_of_hour=15, name="daily_refresh_schedule"
        ),
        dg.ScheduleDefinition(
            name="nightly_retrain_schedule",
            job=nightly_retrain,
            cron_schedule="0 2 * * *",
            execution_timezone="UTC",
        ),
    ]
    return [daily_refresh, nightly_retrain], schedules, []
