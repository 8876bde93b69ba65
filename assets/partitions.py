"""The daily (UTC) partitions shared by the market and feature assets."""


import dagster as dg

from pipeline.config import Settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().start, timezone="UTC", end_offset=0
)
