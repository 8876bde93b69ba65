"""The monthly (UTC) partitions shared by the market and feature assets.

Monthly, not daily: years of history are tens of partitions, not thousands. Dagster writes a few
events per asset and partition (planned, materialized, each a sqlite commit), so 2,440 daily
partitions of ten assets cost minutes of bookkeeping before and during a history load, for seconds
of data work (issue 15's profile). The month that holds today is a partition too
(``end_offset=1``): the daily refresh re-runs it every night, so it always ends at the last closed
candle; the schedule (assets/automation.py) asks for the month that holds yesterday.

The first partition is the month of ``CONVTRADE_START``; its window starts at that day, not at the
first of the month (:func:`partition_window`).
"""


import datetime as dt
import warnings

import dagster as dg

from pipeline.config import Settings
from pipeline.core.timegrid import utc_naive

# BackfillPolicy.single_run() is what makes a backfill of many months one run (the market and dbt
# assets use it); Dagster marks that parameter beta and warns once per asset while the code location
# loads, a warning no user of the UI can act on. Only that warning is filtered.
warnings.filterwarnings(
    "ignore", message=r"Parameter `backfill_policy` of function .* is currently in beta", category=dg.BetaWarning
)

# The partition set is fixed when the code location loads (README: CONVTRADE_START).
HISTORY_START: dt.date = Settings.from_env().start_date


def month_key(day: dt.date) -> str:
    """The key of the monthly partition that holds ``day`` (``YYYY-MM-01``)."""
    return day.replace(day=1).isoformat()


market_partitions = dg.MonthlyPartitionsDefinition(
    start_date=month_key(HISTORY_START), timezone="UTC", end_offset=1
)


def partition_window(context, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime] | tuple[None, None]:
    """The run's [start, end) as naive UTC datetimes: one month, or a whole single-run backfill.

    The first month starts at ``CONVTRADE_START``; the month in progress ends with the day of ``now``
    (default :meth:`Settings.now`: the replay clock ``CONVTRADE_CLOCK`` when set, else today, UTC), so
    the run's log and metadata name the days it can hold. ``(None, None)`` when the run has no
    partition (e.g. a check run on its own).
    """
    if not context.has_partition_key and not context.has_partition_key_range:
        return None, None
    window = context.partition_time_window
    today = utc_naive(now or Settings.from_env().now()).date()
    tomorrow = utc_naive(today + dt.timedelta(days=1))
    return max(utc_naive(window.start), utc_naive(HISTORY_START)), min(utc_naive(window.end), tomorrow)


def first_partition_keys(days: int) -> list[str]:
    """The first monthly partition keys whose windows together hold at least ``days`` days of history
    (a run over the start of the history: tests, benchmarks)."""
    keys, covered = [], 0
    for key in market_partitions.get_partition_keys():
        if covered >= days:
            break
        window = market_partitions.time_window_for_partition_key(key)
        covered += (utc_naive(window.end) - max(utc_naive(window.start), utc_naive(HISTORY_START))).days
        keys.append(key)
    return keys
