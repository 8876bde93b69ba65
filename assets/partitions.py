"""The daily (UTC) partitions shared by the market and feature assets."""


import datetime as dt
import warnings

import dagster as dg

from pipeline.config import Settings
from pipeline.market.timegrid import utc_naive

# BackfillPolicy.single_run() is what makes a backfill of many days one run (the market and dbt
# assets use it); Dagster marks that parameter beta and warns once per asset while the code location
# loads, a warning no user of the UI can act on. Only that warning is filtered.
warnings.filterwarnings(
    "ignore", message=r"Parameter `backfill_policy` of function .* is currently in beta", category=dg.BetaWarning
)

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
