"""What a user sees of a training run: the loss-curve image, the per-fold table, the checks on an outcome.

The Dagster asset ``models/<architecture>`` puts these in its metadata and its
blocking check; they are plain functions so tests and scripts see the same.
"""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import polars as pl

FOLD_COLUMNS = ("fold", "scope", "train_start", "train_end", "test_start", "test_end", "epochs_run",
                "best_val_loss", "oos_accuracy", "majority_accuracy", "oos_log_loss", "prior_log_loss", "n_test",
                "train_seconds")


def loss_curve_png(curves: dict[int, list[dict]], title: str = "") -> bytes:
    """Training (solid) and validation (dashed) loss per epoch, one colour per fold, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, (fold, curve) in enumerate(sorted(curves.items())):
        if not curve:
            continue
        epochs = [row["epoch"] + 1 for row in curve]
        color = f"C{k % 10}"
        ax.plot(epochs, [row["train_loss"] for row in curve], color=color, label=f"fold {fold} train")
        ax.plot(epochs, [row["val_loss"] for row in curve], color=color, linestyle="--", label=f"fold {fold} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("multi-task loss")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """Markdown that shows PNG bytes inline (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def fold_table_markdown(rows: list[dict]) -> str:
    """The per-fold table: ranges, epochs, validation loss, out-of-sample accuracy and log-loss vs the prior."""
    lines = ["| " + " | ".join(FOLD_COLUMNS) + " |", "|" + "---|" * len(FOLD_COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in FOLD_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def check_training(registry: pl.DataFrame, predictions: pl.DataFrame, weights_finite: bool,
                   log_loss_tolerance: float) -> tuple[bool, dict]:
    """The blocking check of a training: weights finite, OOS log-loss vs the class prior, every test bar predicted.

    ``registry`` / ``predictions`` are one architecture's ``models.registry``
    and ``predictions.oos`` rows. Passes when the weights are finite, the
    pooled out-of-sample log-loss (weighted by test bars) is no worse than the
    class-prior predictor's by more than ``log_loss_tolerance`` nats, and each
    fold has exactly one prediction per test sample (``n_test``), none twice.
    """
    per_fold = []
    covered = True
    counts = dict(predictions.group_by("model_id").len().iter_rows()) if predictions.height else {}
    duplicated = predictions.height - predictions.unique(["model_id", "symbol", "ts"]).height if predictions.height else 0
    oos_sum = prior_sum = n_sum = 0.0
    for mid, metrics in zip(registry["model_id"], registry["metrics"]):
        m = json.loads(metrics) if isinstance(metrics, str) else dict(metrics)
        n_test = int(m.get("n_test", 0))
        have = int(counts.get(mid, 0))
        covered &= have == n_test and n_test > 0
        if n_test and math.isfinite(m.get("oos_log_loss", math.nan)):
            oos_sum += m["oos_log_loss"] * n_test
            prior_sum += m["prior_log_loss"] * n_test
            n_sum += n_test
        per_fold.append({"model_id": mid, "n_test": n_test, "predictions": have,
                         "oos_log_loss": m.get("oos_log_loss"), "prior_log_loss": m.get("prior_log_loss")})
    oos = oos_sum / n_sum if n_sum else math.nan
    prior = prior_sum / n_sum if n_sum else math.nan
    excess = oos - prior
    log_loss_ok = bool(np.isfinite(excess) and excess <= log_loss_tolerance)
    passed = bool(weights_finite and covered and duplicated == 0 and log_loss_ok and registry.height > 0)
    return passed, {"weights_finite": bool(weights_finite), "every_test_bar_predicted": bool(covered),
                    "duplicate_predictions": int(duplicated), "oos_log_loss": oos, "prior_log_loss": prior,
                    "log_loss_excess": excess, "log_loss_tolerance": log_loss_tolerance, "folds": per_fold}
