"""Monitoring: ``monitoring/drift``, the drift of every model-input feature and the accuracy decay of the live models.

The statistics are computed in :mod:`pipeline.monitoring.drift`; the drift
sensor (:mod:`assets.automation`) reads the rows this asset writes.
"""

import dagster as dg

from assets.resources import SettingsResource, WarehouseResource
from assets.training import MODEL_KEYS
from pipeline.monitoring.drift import DriftThresholds, compute_drift, drift_plot_png, store_drift
from pipeline.training.report import png_markdown

DRIFT_KEY = dg.AssetKey(["monitoring", "drift"])


def frame_markdown(frame) -> str:
    """A polars frame as a Markdown table (floats to 4 significant digits) for asset metadata."""
    if frame.height == 0:
        return "no report"
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def rows_written_metadata(written: dict[str, int]) -> dict[str, dg.MetadataValue]:
    """Asset metadata ``rows_<table>`` (the name without its schema) for each warehouse table a write filled."""
    return {f"rows_{table.split('.', 1)[-1]}": dg.MetadataValue.int(n) for table, n in written.items()}


@dg.asset(
    key=DRIFT_KEY,
    group_name="monitoring",
    pool="warehouse",
    deps=[dg.AssetKey(["features", "candle_features"]), dg.AssetKey(["features", "labels"]), *MODEL_KEYS],
    description="Per symbol and model-input feature: PSI (reference-quantile bins) and two-sample KS "
                "(Bonferroni over features) between the live model's training window and the newest bars; per "
                "symbol and architecture: recent accuracy of predictions.oos against the realised labels vs the "
                "walk-forward accuracy. Writes monitoring.drift and monitoring.accuracy; the drift sensor reads them.",
)
def monitoring_drift(context: dg.AssetExecutionContext, settings: SettingsResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    cfg = settings.settings()
    wh = warehouse.warehouse()
    thresholds = DriftThresholds.from_settings(cfg)
    report = compute_drift(wh, cfg, thresholds)
    written = store_drift(wh, report)
    for line in report.skipped:
        context.log.warning(line)
    summary = report.summary()
    metadata = {
        "summary": dg.MetadataValue.md(frame_markdown(summary)),
        **rows_written_metadata(written),
        "thresholds": dg.MetadataValue.json({"psi": thresholds.psi, "ks_pvalue": thresholds.ks_pvalue,
                                             "accuracy_drop": thresholds.accuracy_drop,
                                             "recent_bars": thresholds.recent_bars,
                                             "accuracy_bars": thresholds.accuracy_bars}),
    }
    if report.accuracy.height:
        metadata["accuracy"] = dg.MetadataValue.md(frame_markdown(report.accuracy.select(
            "symbol", "architecture", "recent_accuracy", "n_recent", "walk_forward_accuracy", "decayed")))
    if (png := drift_plot_png(report, thresholds.psi)) is not None:
        path = cfg.reports_dir / "monitoring" / "drift_psi.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        metadata["psi_plot"] = dg.MetadataValue.md(png_markdown(png, "PSI per feature"))
        metadata["psi_plot_png"] = dg.MetadataValue.path(str(path))
    if report.skipped:
        metadata["skipped"] = dg.MetadataValue.text("\n".join(report.skipped))
    return dg.MaterializeResult(metadata=metadata)
