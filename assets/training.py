"""Trained models: one asset ``models/<name>`` per trainable model of the catalogue
(:mod:`pipeline.models.catalogue`: a zoo architecture on sequence windows or on one image encoding), and its
check.

Each asset trains every walk-forward fold of its architecture
(:func:`pipeline.training.walk_forward.train_architecture`), then writes its
``models.registry`` rows and ``predictions.oos`` in one transaction. A factory
(not static partitions over architectures) because each architecture is a
different model a user selects, retrains and compares on its own: it gets its
own materialization history, metadata and blocking check, and a run can
select any subset of them; partitions would put nine models under one asset
and one check.

Trainings run in the ``training`` pool (one fit at a time on a small machine)
and hold no warehouse connection while they train: the series are read
first, the rows are written at the end. The run tag ``trigger``
(``manual`` / ``schedule`` / ``drift``) is recorded in ``models.registry``.

Each materialization is a model version (:mod:`pipeline.training.lifecycle`): the walk-forward folds and a live
refit on every labelled bar, under ``artifacts/models/<name>/<version>/``; it becomes the champion (what
``signals/latest`` trades) only through the promotion gate, and its metadata names the version, whether it was
promoted and why. A manual run can force promotion (run config ``force_promotion: true`` or tag
``convtrade/promote=force``).
"""


import dagster as dg

from assets.resources import SettingsResource, WarehouseResource
from pipeline.training.report import check_training, fold_table_markdown, loss_curve_png, png_markdown
from pipeline.models.catalogue import trainable, trainable_models
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import train_architecture

TRIGGER_TAG = "trigger"
PROMOTE_TAG = "convtrade/promote"  # "force": a manual run's new version becomes the champion without the gate


class PromotionConfig(dg.Config):
    """Run config of a models/* asset (launchpad: ``ops: models__<name>: config: force_promotion: true``)."""

    force_promotion: bool = False


def forced_promotion(context, config: PromotionConfig, trigger: str) -> bool:
    """Whether this run forces promotion: run config or tag ``convtrade/promote=force``, manual runs only (the
    nightly and drift retrains always go through the gate)."""
    tag = context.run.tags.get(PROMOTE_TAG, "")
    if tag not in ("", "force"):
        raise ValueError(f"run tag {PROMOTE_TAG}={tag!r}: the only value is 'force'")
    wanted = config.force_promotion or tag == "force"
    if wanted and trigger != "manual":
        context.log.warning(f"forced promotion ignored: this run's trigger is {trigger}, which goes through the gate")
        return False
    return wanted
TRIGGERS = ("manual", "schedule", "drift")
UPSTREAM = [dg.AssetKey(["features", "candle_features"]), dg.AssetKey(["features", "labels"])]


def model_key(architecture: str) -> dg.AssetKey:
    return dg.AssetKey(["models", architecture])


def run_trigger(context) -> str:
    """The run's ``trigger`` tag (``manual`` when absent); an unknown value is an error, not a silent default."""
    value = context.run.tags.get(TRIGGER_TAG, "manual")
    if value not in TRIGGERS:
        raise ValueError(f"run tag {TRIGGER_TAG}={value!r} is not one of {', '.join(TRIGGERS)}")
    return value


def build_model_asset(architecture: str) -> dg.AssetsDefinition:
    entry = trainable(architecture)
    if entry.encoding is not None:
        deps = [dg.AssetKey(["encodings", entry.encoding]), dg.AssetKey(["features", "labels"])]
        inputs = f"the {entry.encoding} images (encodings/{entry.encoding}) with {entry.architecture}"
        if entry.pretrain == "simclr":
            inputs += " (backbone SimCLR-pre-trained per fold on that fold's training-span images)"
    else:
        deps, inputs = UPSTREAM, "features.candle_features windows"
    @dg.asset(
        key=model_key(architecture),
        group_name="models",
        pool="training",
        deps=deps,
        kinds={"pytorch"},
        description=f"{architecture}: every walk-forward fold trained on {inputs} and features.labels (pooled "
                    f"symbols), artifacts under DATA_DIR/artifacts/models/{architecture}/, models.registry rows "
                    "and out-of-sample predictions.oos.",
    )
    def _model(context: dg.AssetExecutionContext, config: PromotionConfig, settings: SettingsResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
        cfg = settings.settings()
        wh = warehouse.warehouse()
        recipe = TrainingConfig.from_settings(cfg, architecture)
        trigger = run_trigger(context)
        force = forced_promotion(context, config, trigger)
        context.log.info(f"training {architecture} ({recipe.variant}, window {recipe.window}, horizon "
                         f"{recipe.horizon}, {recipe.n_folds} folds, {recipe.epochs} epochs), trigger {trigger}")
        outcome = train_architecture(wh, cfg, recipe, trigger=trigger, log=context.log.info, reuse_stored=True)
        written = store_training(wh, outcome, cfg, force=force)
        if outcome.reused:
            context.log.info(written["note"])
            return dg.MaterializeResult(metadata={
                "version": dg.MetadataValue.text(outcome.version),
                "promoted": dg.MetadataValue.text("unchanged: " + written["note"]),
                "rows_registry": dg.MetadataValue.int(0), "rows_predictions": dg.MetadataValue.int(0)})
        if outcome.skipped:
            context.log.warning(f"{architecture}: nothing trained: {outcome.skipped}")
            return dg.MaterializeResult(metadata={
                "skipped": dg.MetadataValue.text(outcome.skipped), "folds": dg.MetadataValue.int(0),
                "dropped_samples": dg.MetadataValue.json(outcome.dropped),
                "rows_registry": dg.MetadataValue.int(0), "rows_predictions": dg.MetadataValue.int(0)})
        curve = loss_curve_png(outcome.loss_curves, f"{architecture}: loss per epoch")
        plot_path = cfg.artifacts_dir / "models" / architecture / "loss_curves.png"
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot_path.write_bytes(curve)
        folds = outcome.fold_table
        n_test = sum(r["n_test"] for r in folds)
        acc = sum(r["oos_accuracy"] * r["n_test"] for r in folds) / max(1, n_test)
        decision = written["promotion"]
        (context.log.info if decision["promoted"] else context.log.warning)(
            f"{architecture} version {outcome.version}: {decision['reason']}")
        live = outcome.live
        live_range = (f"{live['train_start'].min()} .. {live['train_end'].max()}" if live is not None and live.height
                      else "none")
        return dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.text(outcome.version),
                "promoted": dg.MetadataValue.bool(bool(decision["promoted"])),
                "promotion_reason": dg.MetadataValue.text(decision["reason"]),
                "champion_before": dg.MetadataValue.text(decision["champion_before"] or "none"),
                "promotion_metrics": dg.MetadataValue.json(decision["metrics"] or {}),
                "live_train_range": dg.MetadataValue.text(live_range),
                "versions_purged": dg.MetadataValue.text(", ".join(written["purged"]) or "none"),
                "folds": dg.MetadataValue.int(len(folds)),
                "fold_table": dg.MetadataValue.md(fold_table_markdown(folds)),
                "loss_curves": dg.MetadataValue.md(png_markdown(curve, "loss curves")),
                "loss_curves_png": dg.MetadataValue.path(str(plot_path)),
                "oos_accuracy": dg.MetadataValue.float(float(acc)),
                "n_test": dg.MetadataValue.int(n_test),
                "dropped_samples": dg.MetadataValue.json(outcome.dropped),
                "weights_finite": dg.MetadataValue.bool(outcome.weights_finite),
                "train_seconds": dg.MetadataValue.float(round(outcome.train_seconds, 2)),
                "trigger": dg.MetadataValue.text(trigger),
                "rows_registry": dg.MetadataValue.int(written["models.registry"]),
                "rows_predictions": dg.MetadataValue.int(written["predictions.oos"]),
                "artifacts": dg.MetadataValue.path(str(cfg.artifacts_dir / "models" / architecture)),
            }
        )

    return _model


def build_model_check(architecture: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=model_key(architecture), blocking=True, name="training_is_sound",
                    description="Weights finite, out-of-sample log-loss no worse than the class prior's by more "
                                "than the tolerance, and one prediction for every test sample of every fold.")
    def _check(settings: SettingsResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        from pipeline.training.artifacts import load_artifact

        cfg = settings.settings()
        wh = warehouse.warehouse()
        # the newest stored version's folds (the one this materialization trained), champion or not
        newest = ("select model_id from models.registry where architecture = ? and coalesce(role, 'fold') = 'fold' "
                  "and coalesce(version, '') = coalesce((select arg_max(version, created_at) from models.versions "
                  "where architecture = ?), '')")
        registry = wh.query("select model_id, cast(metrics as varchar) as metrics, artifact_path, "
                            "cast(artifact_sha256 as varchar) as sha from models.registry where model_id in "
                            f"({newest}) order by fold", [architecture, architecture])
        predictions = wh.query(f"select model_id, symbol, ts from predictions.oos where model_id in ({newest})",
                               [architecture, architecture])
        finite = registry.height > 0
        for path, sha in zip(registry["artifact_path"], registry["sha"]):
            module = load_artifact(path, sha)
            finite &= all(bool(p.isfinite().all()) for p in module.state_dict().values())
        if registry.height == 0:
            # Nothing was trained (e.g. no order-book history for the heatmap model): reported as a failed
            # warning, never as a pass on nothing; a warning does not block the other models' backtests.
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                       description=f"{architecture} has no trained fold: nothing to check")
        passed, details = check_training(registry, predictions, finite, cfg.oos_log_loss_tolerance)
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(f"OOS log-loss {details['oos_log_loss']:.4f} vs prior {details['prior_log_loss']:.4f} "
                         f"(tolerance {details['log_loss_tolerance']}); weights finite: {details['weights_finite']}; "
                         f"every test bar predicted: {details['every_test_bar_predicted']}"),
            metadata={"folds": dg.MetadataValue.json(details["folds"]),
                      "log_loss_excess": dg.MetadataValue.float(float(details["log_loss_excess"])),
                      "duplicate_predictions": dg.MetadataValue.int(details["duplicate_predictions"])},
        )

    return _check


# Read from the catalogue when the definitions are imported: a trainable model registered by then (its
# architecture file in pipeline.models.zoo.ARCHITECTURE_MODULES, or a module imported first) gets its asset,
# its check and a place among the dependencies of the backtest, drift and signal assets.
ARCHITECTURES = tuple(m.name for m in trainable_models())
MODEL_ASSETS = [build_model_asset(a) for a in ARCHITECTURES]
MODEL_CHECKS = [build_model_check(a) for a in ARCHITECTURES]
MODEL_KEYS = [model_key(a) for a in ARCHITECTURES]
