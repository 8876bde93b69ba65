"""``defs``: the one Definitions object (assets, checks, jobs, schedules, sensors, resources).

``materialize_all()`` is what ``make demo`` runs: every partitioned asset over
all its partitions in one run, then every unpartitioned asset.
"""

from __future__ import annotations

import dagster as dg

from assets import backtests, checks, encodings, features, market, monitoring, signals, training
from assets import run_safety
from assets.automation import build_automation
from assets.resources import default_resources

ASSET_MODULES = [market, checks, features, encodings, training, backtests, monitoring, signals]
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
        sensors=[*sensors, run_safety.dead_run_sensor],
        resources=all_resources(),
        # Steps in one process: on a small machine a subprocess per step costs more than it
        # saves, and the warehouse writers run one at a time (pool "warehouse") anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
# In every process that loads these definitions (a run worker under `dagster dev`, `convtrade demo`):
# a step waiting for a pool slot sleeps, says who holds it, and stops on SIGINT/SIGTERM.
run_safety.install_pool_wait_fix()
# ... and Dagster's sqlite run history is written without an fsync per event (setting dagster_fsync).
run_safety.install_sqlite_without_fsync()

# Dagster's system tags for a run over a partition range ("dagster/asset_partition_range_start"
# and "_end"): the public API has no constant or helper for a single run over a range outside a
# backfill (dg.materialize takes one partition_key), so the tag names are written here once.
# tests/test_workspace.py::test_partition_range_tags_reach_the_asset fails loudly if an upgrade
# renames them (the asset then sees one partition, or none, instead of the range).
_PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the partitions ``first`` .. ``last`` (inclusive)."""
    return {_PARTITION_RANGE_TAGS[0]: first, _PARTITION_RANGE_TAGS[1]: last}


def asset_groups() -> set[str]:
    """The group names of the assets (what ``materialize_all(groups=...)`` and ``convtrade demo --only`` take)."""
    return {g for a in ASSETS for g in a.group_names_by_key.values()}


def materialize_all(
    instance: dg.DagsterInstance | None = None, resources: dict | None = None, log_level: str = "INFO",
    groups: list[str] | None = None,
) -> list:
    """Materialize every asset on the current settings: partitioned ones over all partitions in one run each.

    ``groups``: only the assets of these groups (e.g. ``["market"]``; None: every asset). Before
    anything runs, runs killed earlier are marked failed and their pool slots freed
    (:func:`assets.run_safety.fail_dead_runs`); the runs launched here carry this process's pid and
    host. On SIGINT/SIGTERM (``KeyboardInterrupt`` / ``DagsterExecutionInterruptedError``, re-raised)
    this process's runs are marked failed and their slots freed.
    """
    if groups is not None and (unknown := set(groups) - asset_groups()):
        raise ValueError(f"unknown asset group(s) {', '.join(sorted(unknown))}: use {', '.join(sorted(asset_groups()))}")
    resources = resources or all_resources()
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}

    def keys(assets: list) -> list[dg.AssetKey]:
        return [k for a in assets for k, g in a.group_names_by_key.items() if groups is None or g in groups]

    partitioned = [a for a in ASSETS if a.partitions_def is not None]
    unpartitioned = [a for a in ASSETS if a.partitions_def is None]
    tags = run_safety.launch_tags()
    if instance is not None:
        run_safety.fail_dead_runs(instance)
    results = []
    try:
        if keys(partitioned):
            months = partitioned[0].partitions_def.get_partition_keys()
            if months:
                results.append(
                    dg.materialize(
                        partitioned + CHECKS,
                        run_config=run_config,
                        instance=instance,
                        resources=resources,
                        tags={**tags, **partition_range_tags(months[0], months[-1])},
                        selection=dg.AssetSelection.assets(*keys(partitioned)),
                    )
                )
        if keys(unpartitioned):
            results.append(
                dg.materialize(
                    partitioned + unpartitioned + CHECKS,
                    run_config=run_config,
                    instance=instance,
                    resources=resources,
                    tags=tags,
                    selection=dg.AssetSelection.assets(*keys(unpartitioned)),
                )
            )
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        if instance is not None:
            run_safety.release_own_runs(instance, run_safety.INTERRUPTED_MESSAGE)
        raise
    return results
