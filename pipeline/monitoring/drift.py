"""Data drift and accuracy decay of the live models, per symbol.

For each symbol the **reference window** is the training range
(``train_start`` .. ``train_end``) of the live model: the newest
``models.registry`` row whose symbols include it (the latest fold of the
latest training; pooled models share their folds). The **current window** is
the newest ``drift_recent_bars`` bars of ``features.candle_features`` (warm-up
and filled rows left out). The reference is cut to end before the current
window starts, so the two never share a bar.

Per watched model-input feature (``Settings.drift_columns``: the ``drift_features`` setting, by default
every name of :data:`pipeline.core.columns.MODEL_INPUT_COLUMNS`):

- **PSI**, the population stability index ``sum_i (c_i - r_i) * ln(c_i / r_i)``
  over fixed bins: the edges are the reference window's quantiles
  (``drift_psi_bins`` bins, repeated edges merged), ``r_i`` / ``c_i`` the
  shares of the reference / current values in bin ``i``, each floored at
  :data:`PSI_FLOOR` so an empty bin adds a large but finite term;
- the two-sample **Kolmogorov-Smirnov** statistic and p-value
  (:func:`scipy.stats.ks_2samp`), the p-value Bonferroni-corrected over the
  features of the symbol (``min(1, p * m)``).

A feature drifted when its PSI is at least ``drift_psi_threshold`` or its
corrected KS p-value is below ``drift_ks_pvalue``.

**Accuracy decay**, per symbol and architecture: the accuracy (argmax of
``p_down, p_flat, p_up`` against the realised label class of
``features.labels``) of the newest ``drift_accuracy_bars`` predicted bars of
``predictions.oos`` with a known label, against the walk-forward accuracy of
the architecture (the ``oos_accuracy`` of every fold in ``models.registry``,
weighted by ``n_test``). Decayed when the recent accuracy is below it by more
than ``drift_accuracy_drop``.

A report is identified by its symbol and ``at`` (the newest bar of the current
window), so recomputing it on the same data gives the same rows (and the drift
sensor the same run key).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import polars as pl

from pipeline.core.columns import FEATURES_TABLE, MODEL_INPUT_COLUMNS, not_a_model_row_sql
from pipeline.features.labels import load_labels

PSI_FLOOR = 1e-4
DRIFT_TABLE = "monitoring.drift"
ACCURACY_TABLE = "monitoring.accuracy"


# ---------------------------------------------------------------- statistics

def quantile_edges(reference, bins: int) -> np.ndarray:
    """Interior bin edges: the reference's quantiles at 1/bins .. (bins-1)/bins, repeated edges merged."""
    ref = _finite("reference", reference)
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins={bins!r}: need an integer >= 2")
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, int(bins) + 1)[1:-1]))


def bin_shares(values, edges) -> np.ndarray:
    """Share of ``values`` in each bin (``len(edges) + 1`` bins; a value equal to an edge goes right)."""
    v = _finite("values", values)
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="right"),
                         minlength=len(edges) + 1)
    return counts / v.size


def psi_from_shares(reference_shares, current_shares, floor: float = PSI_FLOOR) -> float:
    """``sum (c - r) * ln(c / r)`` over bins, shares floored at ``floor``."""
    r = np.maximum(np.asarray(reference_shares, dtype=np.float64), floor)
    c = np.maximum(np.asarray(current_shares, dtype=np.float64), floor)
    if r.shape != c.shape:
        raise ValueError(f"reference has {r.shape} bins but current {c.shape}")
    return float(np.sum((c - r) * np.log(c / r)))


def psi(reference, current, bins: int = 10, floor: float = PSI_FLOOR) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    return psi_from_shares(bin_shares(reference, edges), bin_shares(current, edges), floor)


def ks_test(reference, current) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and (two-sided) p-value."""
    from scipy import stats

    result = stats.ks_2samp(_finite("reference", reference), _finite("current", current))
    return float(result.statistic), float(result.pvalue)


def bonferroni(p_values) -> np.ndarray:
    """Bonferroni-corrected p-values: ``min(1, p * m)`` over the ``m`` tests given."""
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(1.0, p * p.size)


def _finite(name: str, values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError(f"{name}: no finite values to compare")
    return v


# ---------------------------------------------------------------- thresholds

@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2
    ks_pvalue: float = 0.01
    accuracy_drop: float = 0.05
    bins: int = 10
    recent_bars: int = 720
    accuracy_bars: int = 168
    cooldown_hours: float = 24.0

    @classmethod
    def from_settings(cls, settings) -> "DriftThresholds":
        return cls(settings.drift_psi_threshold, settings.drift_ks_pvalue, settings.drift_accuracy_drop,
                   settings.drift_psi_bins, settings.drift_recent_bars, settings.drift_accuracy_bars,
                   settings.drift_cooldown_hours)

    @property
    def min_accuracy_bars(self) -> int:
        """Fewest scored bars for an accuracy verdict (a quarter of the window, at least 10)."""
        return max(10, self.accuracy_bars // 4)


def feature_drift(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str],
                  thresholds: DriftThresholds) -> pl.DataFrame:
    """``feature, psi, ks, ks_pvalue, ks_pvalue_adjusted, n_reference, n_current, drifted`` per column.

    A column without finite values on one side is left out (not counted in the correction).
    """
    rows = []
    for col in columns:
        ref = reference[col].cast(pl.Float64).drop_nulls().to_numpy()
        cur = current[col].cast(pl.Float64).drop_nulls().to_numpy()
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        if ref.size == 0 or cur.size == 0:
            continue
        stat, p = ks_test(ref, cur)
        rows.append({"feature": col, "psi": psi(ref, cur, thresholds.bins), "ks": stat, "ks_pvalue": p,
                     "n_reference": int(ref.size), "n_current": int(cur.size)})
    schema = {"feature": pl.Utf8, "psi": pl.Float64, "ks": pl.Float64, "ks_pvalue": pl.Float64,
              "n_reference": pl.Int64, "n_current": pl.Int64}
    frame = pl.DataFrame(rows, schema=schema)
    adjusted = bonferroni(frame["ks_pvalue"].to_numpy()) if frame.height else np.zeros(0)
    return frame.with_columns(
        pl.Series("ks_pvalue_adjusted", adjusted, dtype=pl.Float64),
    ).with_columns(
        ((pl.col("psi") >= thresholds.psi) | (pl.col("ks_pvalue_adjusted") < thresholds.ks_pvalue)).alias("drifted")
    )


def recent_accuracy(predictions: pl.DataFrame, labels: pl.DataFrame, bars: int) -> tuple[float, int, object, object]:
    """Accuracy of the newest ``bars`` predictions (``ts, p_down, p_flat, p_up``) with a known label.

    Returns (accuracy, bars scored, first ts, last ts); NaN and 0 when none is scored.
    """
    joined = (predictions.join(labels.select("ts", "label_class"), on="ts", how="inner")
              .filter(pl.col("label_class") >= 0).sort("ts").tail(bars))
    if joined.height == 0:
        return math.nan, 0, None, None
    proba = joined.select("p_down", "p_flat", "p_up").to_numpy()
    hit = proba.argmax(axis=1) == joined["label_class"].to_numpy()
    return float(hit.mean()), int(joined.height), joined["ts"][0], joined["ts"][-1]


def walk_forward_accuracy(metrics: list) -> float:
    """``oos_accuracy`` of the folds weighted by ``n_test`` (the registry's metrics JSON of each fold)."""
    num = den = 0.0
    for m in metrics:
        m = json.loads(m) if isinstance(m, str) else dict(m or {})
        acc, n = m.get("oos_accuracy"), m.get("n_test", 0)
        if acc is None or not math.isfinite(float(acc)) or not n:
            continue
        num += float(acc) * n
        den += n
    return num / den if den else math.nan


# ---------------------------------------------------------------- the report

@dataclasses.dataclass
class DriftReport:
    drift: pl.DataFrame  # monitoring.drift rows
    accuracy: pl.DataFrame  # monitoring.accuracy rows
    skipped: list[str]

    def summary(self) -> pl.DataFrame:
        """Per symbol: report time, features drifted / compared, max PSI, min corrected KS p, decayed models."""
        if self.drift.height == 0:
            return pl.DataFrame()
        feat = self.drift.group_by("symbol", "at").agg(
            pl.col("drifted").sum().alias("features_drifted"), pl.len().alias("features"),
            pl.col("psi").max().alias("max_psi"), pl.col("ks_pvalue_adjusted").min().alias("min_ks_p_adj"))
        if self.accuracy.height:
            acc = self.accuracy.group_by("symbol").agg(
                pl.col("architecture").filter(pl.col("decayed")).sort().str.join(",").alias("decayed_models"))
            feat = feat.join(acc, on="symbol", how="left")
        return feat.sort("symbol")


def live_models(registry: pl.DataFrame, symbol: str, interval: str) -> pl.DataFrame:
    """The registry rows of the newest fold of each architecture covering ``symbol`` / ``interval``."""
    rows = registry.filter((pl.col("interval") == interval)
                           & pl.col("symbol").str.split(",").list.contains(symbol))
    if rows.height == 0:
        return rows
    return rows.sort(["train_end", "created_at", "fold"], descending=True).unique("architecture", keep="first")


def _registry(warehouse) -> pl.DataFrame:
    return warehouse.query(
        "select model_id, architecture, symbol, interval, fold, train_start, train_end, created_at, "
        "cast(metrics as varchar) as metrics from models.current")


def compute_drift(warehouse, settings, thresholds: DriftThresholds | None = None,
                  columns: list[str] | None = None) -> DriftReport:
    """Drift and accuracy rows of every symbol of ``settings`` (see the module docstring)."""
    th = thresholds or DriftThresholds.from_settings(settings)
    columns = list(columns or settings.drift_columns)
    interval = settings.intervals[0]
    registry = _registry(warehouse) if warehouse.table_exists("models.current") else pl.DataFrame()
    skip_rows = not_a_model_row_sql(warehouse)
    drift_frames, acc_rows, skipped = [], [], []
    for symbol in settings.symbols:
        live = live_models(registry, symbol, interval) if registry.height else registry
        if live.height == 0:
            skipped.append(f"{symbol}: no trained model covers it (materialize the models/* assets first)")
            continue
        newest = live.sort(["train_end", "created_at"], descending=True).row(0, named=True)
        feats = warehouse.query(
            f"select ts, {', '.join(columns)} from {FEATURES_TABLE} where symbol = ? and interval = ? "
            f"and not ({skip_rows}) order by ts", [symbol, interval])
        current = feats.tail(th.recent_bars)
        if current.height < 2:
            skipped.append(f"{symbol}: {current.height} feature rows, too few for a current window")
            continue
        cur_start, at = current["ts"][0], current["ts"][-1]
        reference = feats.filter(pl.col("ts").is_between(newest["train_start"], newest["train_end"])
                                 & (pl.col("ts") < cur_start))
        if reference.height < 2:
            skipped.append(f"{symbol}: the live model's training range {newest['train_start']} .. "
                           f"{newest['train_end']} has {reference.height} feature rows before the current window")
            continue
        stats = feature_drift(reference, current, columns, th)
        drift_frames.append(stats.with_columns(
            pl.lit(symbol).alias("symbol"), pl.lit(at).alias("at"), pl.lit(newest["model_id"]).alias("model_id"),
            pl.lit(reference["ts"][0]).alias("reference_start"), pl.lit(reference["ts"][-1]).alias("reference_end"),
            pl.lit(cur_start).alias("current_start"), pl.lit(at).alias("current_end")))
        acc_rows.extend(_accuracy_rows(warehouse, settings, registry, live, symbol, interval, at, th))
    drift = pl.concat(drift_frames, how="vertical_relaxed") if drift_frames else pl.DataFrame()
    accuracy = pl.DataFrame(acc_rows) if acc_rows else pl.DataFrame()
    return DriftReport(drift, accuracy, skipped)


def _accuracy_rows(warehouse, settings, registry, live, symbol, interval, at, th: DriftThresholds) -> list[dict]:
    labels = load_labels(warehouse, symbol, interval, settings.horizon)
    rows = []
    for arch in sorted(live["architecture"].to_list()):
        folds = registry.filter((pl.col("architecture") == arch) & (pl.col("interval") == interval))
        preds = warehouse.query(
            "select ts, p_down, p_flat, p_up from predictions.oos where symbol = ? and interval = ? and model_id in "
            "(select model_id from models.current where architecture = ?) order by ts", [symbol, interval, arch])
        acc, n, first, last = recent_accuracy(preds, labels, th.accuracy_bars)
        reference = walk_forward_accuracy(folds["metrics"].to_list())
        decayed = bool(n >= th.min_accuracy_bars and math.isfinite(reference) and acc < reference - th.accuracy_drop)
        rows.append({"symbol": symbol, "architecture": arch, "at": at, "recent_accuracy": acc,
                     "n_recent": n, "recent_start": first, "recent_end": last,
                     "walk_forward_accuracy": reference, "decayed": decayed})
    return rows


def store_drift(warehouse, report: DriftReport) -> dict[str, int]:
    """Replace the reports' rows (per symbol and ``at``) of both tables in one transaction."""
    from pipeline.warehouse import Replacement

    replacements = []
    for (symbol, at), rows in (report.drift.group_by("symbol", "at") if report.drift.height else []):
        replacements.append(Replacement(DRIFT_TABLE, rows, 'symbol = ? and "at" = ?', [symbol, at]))
    for (symbol, at), rows in (report.accuracy.group_by("symbol", "at") if report.accuracy.height else []):
        replacements.append(Replacement(ACCURACY_TABLE, rows, 'symbol = ? and "at" = ?', [symbol, at]))
    if replacements:
        warehouse.replace_tables(replacements)
    return {DRIFT_TABLE: report.drift.height, ACCURACY_TABLE: report.accuracy.height}


# ---------------------------------------------------------------- what the sensor reads

@dataclasses.dataclass(frozen=True)
class Verdict:
    """The newest report of one symbol, judged against the thresholds."""

    symbol: str
    at: object  # datetime of the newest bar of the current window
    drifted_features: tuple[str, ...]
    decayed_models: tuple[str, ...]
    architectures: tuple[str, ...]  # architectures of the live models (all retrain on feature drift)

    @property
    def triggered(self) -> bool:
        return bool(self.drifted_features or self.decayed_models)

    @property
    def affected_models(self) -> tuple[str, ...]:
        return self.architectures if self.drifted_features else self.decayed_models

    @property
    def report_id(self) -> str:
        return f"{self.symbol}@{self.at:%Y-%m-%dT%H:%M}"

    def reason(self) -> str:
        parts = []
        if self.drifted_features:
            shown = ", ".join(self.drifted_features[:5]) + (" ..." if len(self.drifted_features) > 5 else "")
            parts.append(f"{len(self.drifted_features)} feature(s) drifted ({shown})")
        if self.decayed_models:
            parts.append(f"accuracy decayed for {', '.join(self.decayed_models)}")
        return f"{self.report_id}: " + ("; ".join(parts) if parts else "no drift, no accuracy decay")


def latest_verdicts(warehouse, thresholds: DriftThresholds) -> list[Verdict]:
    """The newest report of every symbol in ``monitoring.drift`` / ``monitoring.accuracy``, judged now.

    The stored statistics are re-judged with ``thresholds`` (a changed setting applies to the next tick).
    """
    if not warehouse.path.exists() or not warehouse.table_exists(DRIFT_TABLE):
        return []
    with warehouse.connect(read_only=True) as con:
        drift = con.sql(
            f'select symbol, "at", feature, psi, ks_pvalue_adjusted from {DRIFT_TABLE} d '
            f'where "at" = (select max("at") from {DRIFT_TABLE} e where e.symbol = d.symbol)').pl()
        has_acc = con.execute("select count(*) from information_schema.tables where table_schema = 'monitoring' "
                              "and table_name = 'accuracy'").fetchall()[0][0]
        acc = con.sql(
            f'select symbol, "at", architecture, recent_accuracy, n_recent, walk_forward_accuracy '
            f'from {ACCURACY_TABLE}').pl() if has_acc else pl.DataFrame()
    out = []
    for (symbol, at), rows in drift.sort("symbol").group_by("symbol", "at", maintain_order=True):
        bad = rows.filter((pl.col("psi") >= thresholds.psi) | (pl.col("ks_pvalue_adjusted") < thresholds.ks_pvalue))
        mine = acc.filter((pl.col("symbol") == symbol) & (pl.col("at") == at)) if acc.height else acc
        decayed = mine.filter((pl.col("n_recent") >= thresholds.min_accuracy_bars)
                              & (pl.col("recent_accuracy") < pl.col("walk_forward_accuracy") - thresholds.accuracy_drop)
                              ) if mine.height else mine
        out.append(Verdict(symbol, at, tuple(sorted(bad["feature"].to_list())),
                           tuple(sorted(decayed["architecture"].to_list())) if decayed.height else (),
                           tuple(sorted(mine["architecture"].to_list())) if mine.height else ()))
    return out


def drift_plot_png(report: DriftReport, psi_threshold: float) -> bytes | None:
    """PSI per feature (one bar group per symbol) with the threshold line, as PNG bytes (None without rows)."""
    if report.drift.height == 0:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    symbols = sorted(set(report.drift["symbol"].to_list()))
    features = [c for c in MODEL_INPUT_COLUMNS if c in set(report.drift["feature"].to_list())]
    x = np.arange(len(features))
    width = 0.8 / max(1, len(symbols))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k, symbol in enumerate(symbols):
        rows = report.drift.filter(pl.col("symbol") == symbol)
        value = dict(zip(rows["feature"], rows["psi"]))
        ax.bar(x + k * width, [value.get(f, np.nan) for f in features], width, label=symbol)
    ax.axhline(psi_threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {psi_threshold}")
    ax.set_xticks(x + 0.4 - width / 2, features, rotation=90, fontsize=6)
    ax.set_ylabel("PSI")
    ax.set_yscale("symlog", linthresh=0.05)
    ax.legend(fontsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
