"""``defs``: the one Definitions object (assets, checks, jobs, schedules, sensors, resources).

``materialize_all()`` is what ``make demo`` runs: every partitioned asset over
all its partitions in one run, then every unpartitioned asset.
"""

from __future__ import annotations

import dagster as dg

from assets import backtests, checks, features, market
from assets.automation import build_automation
from assets.resources import default_resources

ASSET_MODULES = [market, checks, features, backtests]
ASSETS = [a for a in dg.load_assets_from_modules(ASSET_MODULES) if isinstance(a, dg.AssetsDefinition) and a.keys]
CHECKS = list(dg.load_asset_checks_from_modules(ASSET_MODULES))


def all_resources(settings=None) -> dict:
    """Every resource the assets need; ``settings`` (a ``SettingsResource``) points them at one DATA_DIR."""
    return {**default_resources(settings), "dbt": features.dbt_resource()}


def build_definitions() -> dg.Definitions:
    jobs, schedules, sensors = build_automation()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=all_resources(),
        # Steps in one process: on a small machine a subprocess per step costs more than it
        # saves, and the warehouse writers run one at a time (pool "warehouse") anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()

# Dagster's system tags for a run over a partition range ("dagster/asset_partition_range_start"
# and "_end"): the public API has no constant or helper for a single run over a range outside a
# backfill (dg.materialize takes one partition_key), so the tag names are written here once.
# tests/test_workspace.py::test_partition_range_tags_reach_the_asset fails loudly if an upgrade
# renames them (the asset then sees one partition, or none, instead of the range).
_PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the partitions ``first`` .. ``last`` (inclusive)."""
    return {_PARTITION_RANGE_TAGS[0]: first, _PARTITION_RANGE_TAGS[1]: last}


def materialize_all(
    instance: dg.DagsterInstance | None = None, resources: dict | None = None, log_level: str = "INFO"
) -> list:
    """Materialize every asset on the current settings: partitioned ones over all partitions in one run each."""
    resources = resources or all_resources()
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    partitioned = [a for a in ASSETS if a.partitions_def is not None]
    unpartitioned = [a for a in ASSETS if a.partitions_def is None]
    results = []
    if partitioned:
        keys = partitioned[0].partitions_def.get_partition_keys()
        if keys:
            results.append(
                dg.materialize(
                    partitioned + CHECKS,
                    run_config=run_config,
                    instance=instance,
                    resources=resources,
                    tags=partition_range_tags(keys[0], keys[-1]),
                    selection=dg.AssetSelection.assets(*partitioned),
                )
            )
    if unpartitioned:
        results.append(
            dg.materialize(
                partitioned + unpartitioned + CHECKS,
                run_config=run_config,
                instance=instance,
                resources=resources,
                selection=dg.AssetSelection.assets(*unpartitioned),
            )
        )
    return results
