"""The daily (UTC) partitions shared by the market and feature assets."""


import datetime as dt

import dagster as dg

from pipeline.config import Settings
from pipeline.market.timegrid import utc_naive

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().start, timezone="UTC", end_offset=0
)


def partition_window(context) -> tuple[dt.datetime, dt.datetime] | tuple[None, None]:
    """The run's [start, end) as naive UTC datetimes: one day, or a whole single-run backfill.

    ``(None, None)`` when the run has no partition (e.g. a check run on its own).
    """
    if not context.has_partition_key and not context.has_partition_key_range:
        return None, None
    window = context.partition_time_window
    return utc_naive(window.start), utc_naive(window.end)
