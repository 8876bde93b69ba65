"""Encoding assets (group ``encodings``): market images as memory-mapped arrays with their index tables.

One asset per encoding (``encodings/<name>``), on the monthly partitions of the market assets
(assets/partitions.py; a backfill of many months is one run): it calls
``pipeline.encodings.build.build_encoding`` on the run's window, which reads the raw candles (or
order-book snapshots) of those months plus the look-back their first images need, writes
``$DATA_DIR/artifacts/encodings/<name>/<symbol>_<interval>/<YYYY-MM>.npy`` for each month of the
window and replaces those months' rows of ``encodings.<name>_index`` in one transaction (other
months' files and rows are untouched), and reports the image shape, counts, what each series was
built from and a few sample images of the window.
"""

import base64

import dagster as dg
import numpy as np

from assets.market import markdown_table
from assets.partitions import market_partitions, partition_window
from assets.resources import SettingsResource, WarehouseResource
from pipeline.encodings.build import ENCODINGS, build_encoding
from pipeline.encodings.preview import sample_png
from pipeline.encodings.image_files import check_encoding, month_of_ms, open_images

SAMPLES = 4


def _metadata(build, warehouse, settings) -> dict:
    w = build.written
    meta: dict = {
        "shape": dg.MetadataValue.text(f"{tuple(w.shape)} {w.dtype}"),
        "count": dg.MetadataValue.int(w.count),
        "months": dg.MetadataValue.text(", ".join(w.months) or "every month"),
        "index_table": dg.MetadataValue.text(f"encodings.{build.spec.name}_index"),
        "history": dg.MetadataValue.md(markdown_table(build.history)),
        "rows_replaced": dg.MetadataValue.int(w.rows_replaced),
    }
    written = [(key, n) for key, n in w.counts.items() if n]
    if written:
        (symbol, interval), n = written[0]
        meta["folder"] = dg.MetadataValue.path(str(w.paths[(symbol, interval)][0].parent))
        index, images = open_images(warehouse, settings.artifacts_dir, build.spec.name, symbol, interval)
        ts_ms = index["ts_ms"].to_numpy()
        mine = np.flatnonzero(np.isin(month_of_ms(ts_ms).astype(str), w.months)) if w.months \
            else np.arange(ts_ms.shape[0])  # the images this run wrote
        picks = mine[sorted({int(round(q * (mine.shape[0] - 1))) for q in (0.2, 0.45, 0.7, 1.0)})[:SAMPLES]]
        labels = [f"{symbol} {str(np.datetime64(int(ts_ms[p]), 'ms'))[:16]}" for p in picks]
        png = sample_png(images[picks], labels)
        meta["samples"] = dg.MetadataValue.md(
            f"![{build.spec.name} samples](data:image/png;base64,{base64.b64encode(png).decode()})")
    if build.skipped:
        meta["skipped"] = dg.MetadataValue.text("\n".join(build.skipped))
    return meta


def _encoding_asset(name: str):
    s = ENCODINGS[name]
    dep = ["raw", "orderbook"] if s.source == "orderbook" else ["raw", "candles"]

    @dg.asset(
        key=["encodings", name],
        group_name="encodings",
        partitions_def=market_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="warehouse",
        deps=[dg.AssetKey(dep)],
        kinds={"numpy", "duckdb"},
        description=s.description + f". Images: $DATA_DIR/artifacts/encodings/{name}/<symbol>_<interval>/"
                                    f"<YYYY-MM>.npy (one file per month), index: encodings.{name}_index "
                                    "(symbol, interval, ts, row in its month's file).",
    )
    def _asset(context: dg.AssetExecutionContext, settings: SettingsResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
        cfg = settings.settings()
        wh = warehouse.warehouse()
        start, end = partition_window(context)
        build = build_encoding(wh, cfg, name, log=context.log.info,
                               window=None if start is None else (start, end))
        return dg.MaterializeResult(metadata=_metadata(build, wh, cfg))

    return _asset


def _encoding_check(name: str, asset):
    @dg.asset_check(asset=asset, name="files_match_index", blocking=True,
                    description=f"Every series of encodings.{name}_index agrees with its month files (per month: row "
                                "count, rows 0..n-1, no file without rows; ts ascending) and its first and last "
                                "images are finite.")
    def _check(settings: SettingsResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        cfg = settings.settings()
        passed, found = check_encoding(warehouse.warehouse(), cfg.artifacts_dir, name)
        return dg.AssetCheckResult(passed=passed, metadata={
            "series": dg.MetadataValue.int(found["series"]),
            "problems": dg.MetadataValue.text("\n".join(found["problems"]) or "none")})

    return _check


ENCODING_ASSETS = [_encoding_asset(name) for name in ENCODINGS]
ENCODING_CHECKS = [_encoding_check(name, a) for name, a in zip(ENCODINGS, ENCODING_ASSETS)]
ENCODING_KEYS = [a.key for a in ENCODING_ASSETS]
