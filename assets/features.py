"""Dagster assets of dbt_features: staging views, features.candle_features, features.labels.

Each dbt model is an asset keyed [schema, model] in a group per stage; dbt
tests surface as asset checks; a blocking great-expectations check guards the
model-input columns of features.candle_features. Monthly partitions: a run
passes its window to dbt, which rewrites only those days (see the dbt docs of
candle_features for why the values equal a full rebuild).

Importing this module runs nothing: the manifest is prepared by `make setup`
(`python -m pipeline.dbt_runner.invoke parse`), and under `dagster dev` by
``DbtProject.prepare_if_dev()``. The warehouse path and the partition window
reach dbt as options of the one ``DbtCliResource.cli`` invocation, never
through this process's environment.
"""


from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_shared.record import replace
from dagster_dbt import (
    DagsterDbtProjectPreparer,
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from assets.partitions import market_partitions, partition_window
from assets.resources import SettingsResource, WarehouseResource
from pipeline.dbt_runner.invoke import DBT_PROJECT_DIR, MANIFEST_PATH, dbt_executable, launcher_args, parse_project
from pipeline.quality.features_suite import model_input_frames, validate_model_inputs



class InterpreterDbtPreparer(DagsterDbtProjectPreparer):
    """`dbt parse` under `dagster dev` with the dbt of this interpreter's environment.

    dagster-dbt's own preparer runs the `dbt` on PATH (``DbtCliResource``'s default executable), so
    `.venv/bin/dagster dev` started from a shell without `.venv/bin` on PATH failed while the code
    location loaded. Only the manifest step is replaced; the lock against concurrent parses stays.
    """

    def _prepare_manifest(self, project: DbtProject) -> None:
        parse_project()


# DbtProject takes no preparer argument (pinned dagster-dbt 0.29): set it on the record.
dbt_project = replace(
    DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR), preparer=InterpreterDbtPreparer()
)
dbt_project.prepare_if_dev()
if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"{MANIFEST_PATH} is missing: run `make setup` (or `.venv/bin/python -m pipeline.dbt_runner.invoke parse`) "
        "before loading the Dagster definitions"
    )


class FeatureTranslator(DagsterDbtTranslator):
    """Models -> [schema, model]; sources -> their meta.dagster.asset_key; groups per stage."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn") or []
        return fqn[1] if len(fqn) > 2 else "features"


translator = FeatureTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource for Definitions: `resources={"dbt": dbt_resource(), ...}`."""
    return DbtCliResource(
        project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    partitions_def=market_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
)
def feature_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: SettingsResource,
                   warehouse: WarehouseResource):
    """dbt build of the selected models for the run's window (plus each indicator's look-back)."""
    warehouse = warehouse.warehouse()
    warehouse.ensure_schema()  # the raw sources exist even before the first market run
    start, end = partition_window(context)
    # One target folder per DATA_DIR, reused by every run: the checkout does not grow, and
    # dbt's partial-parse state stays warm between runs.
    run_settings = settings.settings()
    target = Path(run_settings.data_dir).resolve() / "dbt" / "target"
    gaps = (run_settings.gap_policy, run_settings.max_fill_bars)  # the candle_features model's gap policy
    yield from dbt.cli(["build", *launcher_args(warehouse.path, start, end, gaps)], context=context,
                       target_path=target).stream()


CANDLE_FEATURES = dg.AssetKey(["features", "candle_features"])


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "model_inputs_expectations",
            asset=CANDLE_FEATURES,
            blocking=True,
            description="Great-expectations suite on the model-input columns of the run's days.",
        )
    ],
)
def candle_features_expectations(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """No NULL/NaN/inf after warm-up, value ranges, one feature row per staged candle per day."""
    warehouse = warehouse.warehouse()
    run_start, run_end = partition_window(context.op_execution_context)
    features, daily = model_input_frames(warehouse, run_start, run_end)
    outcome = validate_model_inputs(features, daily)
    yield dg.AssetCheckResult(
        asset_key=CANDLE_FEATURES,
        check_name="model_inputs_expectations",
        passed=outcome.success,
        description=outcome.summary(),
        metadata={
            "rows_checked": dg.MetadataValue.int(features.height),
            "rows_after_warmup": dg.MetadataValue.int(
                int((~features["is_warmup"]).sum()) if features.height else 0
            ),
            "days_checked": dg.MetadataValue.int(daily.height),
            "expectations": dg.MetadataValue.int(outcome.evaluated),
            "failures": dg.MetadataValue.json(outcome.failures),
        },
    )


