"""``defs``: the one Definitions object (assets, checks, jobs, schedules, sensors, resources).

``materialize_all()`` is what ``make demo`` runs: every partitioned asset over
all its partitions in one run, then every unpartitioned asset.
"""

from __future__ import annotations

import dagster as dg

from assets import backtests, checks, features, market
from pipeline.automation import build_automation
from pipeline.resources import default_resources

_MODULES = [market, checks, features, backtests]
ASSETS = [a for a in dg.load_assets_from_modules(_MODULES) if isinstance(a, dg.AssetsDefinition) and a.keys]
CHECKS = list(dg.load_asset_checks_from_modules(_MODULES))


def _resources() -> dict:
    return {**default_resources(), "dbt": features.dbt_resource()}


def build_definitions() -> dg.Definitions:
    jobs, schedules, sensors = build_automation()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=_resources(),
        # Steps in one process: on a small machine a subprocess per step costs more than it
        # saves, and the warehouse writers run one at a time (pool "warehouse") anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()


def materialize_all(
    instance: dg.DagsterInstance | None = None, resources: dict | None = None, log_level: str = "INFO"
) -> list:
    """Materialize every asset on the current settings: partitioned ones over all partitions in one run each."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    resources = resources or _resources()
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    partitioned = [a for a in ASSETS if a.partitions_def is not None]
    unpartitioned = [a for a in ASSETS if a.partitions_def is None]
    results = []
    checks = CHECKS
    if partitioned:
        keys = partitioned[0].partitions_def.get_partition_keys()
        if keys:
            results.append(
                dg.materialize(
                    partitioned + checks,
                    run_config=run_config,
                    instance=instance,
                    resources=resources,
                    tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
                    selection=dg.AssetSelection.assets(*partitioned),
                )
            )
    if unpartitioned:
        results.append(
            dg.materialize(
                partitioned + unpartitioned + checks,
                run_config=run_config,
                instance=instance,
                resources=resources,
                selection=dg.AssetSelection.assets(*unpartitioned),
            )
        )
    return results
