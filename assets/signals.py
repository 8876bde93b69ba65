"""Live signals: ``signals/latest`` (the newest candle's signal of every architecture and symbol) and
``signals/paper_ledger`` (those signals booked as paper trades, marked to market). No order is ever sent."""

import dagster as dg
import polars as pl

from assets.monitoring import frame_markdown, rows_written_metadata
from assets.resources import SettingsResource, WarehouseResource
from assets.training import MODEL_KEYS
from pipeline.live import SIGNALS_TABLE, book_paper_trades, latest_signals, ledger_summary, store_signals

LATEST_KEY = dg.AssetKey(["signals", "latest"])
LEDGER_KEY = dg.AssetKey(["signals", "paper_ledger"])


@dg.asset(
    key=LATEST_KEY,
    group_name="signals",
    pool="warehouse",
    deps=[*MODEL_KEYS, dg.AssetKey(["features", "candle_features"]), dg.AssetKey(["raw", "candles"]),
          dg.AssetKey(["raw", "orderbook"])],
    description="Per symbol and architecture: the newest closed candle's prediction by the live refit of the "
                "architecture's champion version (trained on every labelled bar up to the newest; models.live), "
                "(windows built as in training; an image model's images encoded now from raw.candles / "
                "raw.orderbook by the encoding's code, checked against the stored encoding where it holds the "
                "same ts, scaled as in training), its signal (+1 long, -1 short, 0 flat) and size by the fold's "
                "edge rule (run over the fold's segment as the model backtest runs it), and the model's "
                "confidence. Symbols without an image (the order-book model without a snapshot window in the "
                "newest candle) are skipped with the reason. Writes signals.latest.",
)
def signals_latest(context: dg.AssetExecutionContext, settings: SettingsResource,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    result = latest_signals(wh, settings.settings())
    written = store_signals(wh, result.signals)
    for line in result.skipped:
        context.log.warning(line)
    metadata = rows_written_metadata({SIGNALS_TABLE: written})
    if result.signals.height:
        metadata["signals"] = dg.MetadataValue.md(frame_markdown(result.signals.select(
            "symbol", "architecture", "ts", "signal", "size", "confidence", "expected_move", "price")))
        metadata["newest_candle"] = dg.MetadataValue.text(str(result.signals["ts"].max()))
        models = result.signals.group_by("architecture").agg(
            pl.col("version").first(), pl.col("model_id").first(), pl.col("train_start").min(),
            pl.col("train_end").max()).sort("architecture")
        metadata["live_models"] = dg.MetadataValue.md(frame_markdown(models))  # how fresh each traded model is
    if result.skipped:
        metadata["skipped"] = dg.MetadataValue.text("\n".join(result.skipped))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=LEDGER_KEY,
    group_name="signals",
    pool="warehouse",
    deps=[LATEST_KEY, dg.AssetKey(["raw", "candles"])],
    description="signals.latest booked as paper trades per architecture and symbol (the backtest's order kernel "
                "and cost model, fills at the signal candle's close), every candle since the last booking marked "
                "to market: signals.paper_ledger, with live P&L per architecture. No real order is sent.",
)
def signals_paper_ledger(settings: SettingsResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    signals = wh.query("select * from signals.latest") if wh.table_exists("signals.latest") else None
    booked = book_paper_trades(wh, settings.settings(), signals) if signals is not None else None
    summary = ledger_summary(wh)
    return dg.MaterializeResult(metadata={
        "rows_booked": dg.MetadataValue.int(booked.height if booked is not None else 0),
        "ledger": dg.MetadataValue.md(frame_markdown(summary)),
    })
