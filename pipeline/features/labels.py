"""The one label definition, as Python reads it.

``features.labels`` (``dbt_features/models/labels/labels.sql``) is the only
place labels are computed. Its horizons and the direction threshold are dbt
vars in ``dbt_features/dbt_project.yml``; :func:`label_spec` reads them from
there, so Python never restates them. Every consumer (the logistic-regression
baseline, the model datasets, the drift monitor) loads the table with
:func:`load_labels` and maps the stored direction (-1 down, 0 flat, +1 up) to a
class index with :func:`direction_to_class`.

Class indices are ``0 down, 1 flat, 2 up``: the order of the model heads'
logits and of the ``p_down, p_flat, p_up`` columns of ``predictions.oos``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import polars as pl
import yaml

DBT_PROJECT_FILE = Path(__file__).resolve().parents[2] / "dbt_features" / "dbt_project.yml"
LABELS_TABLE = "features.labels"
# Class index -> name; the stored direction of class k is k - 1.
CLASS_NAMES: tuple[str, ...] = ("down", "flat", "up")
N_CLASSES = len(CLASS_NAMES)
UNKNOWN_CLASS = -1  # a row whose future is not known (NULL direction)


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    horizons: tuple[int, ...]
    direction_threshold: float

    @property
    def longest_horizon(self) -> int:
        return max(self.horizons)

    def check_horizon(self, horizon: int) -> int:
        if int(horizon) not in self.horizons:
            raise ValueError(
                f"horizon={horizon!r} is not a label horizon: features.labels has {', '.join(map(str, self.horizons))} "
                f"(dbt var label_horizons in {DBT_PROJECT_FILE})"
            )
        return int(horizon)


@functools.cache
def label_spec(project_file: Path = DBT_PROJECT_FILE) -> LabelSpec:
    """Horizons and direction threshold from the dbt project's vars."""
    try:
        variables = yaml.safe_load(Path(project_file).read_text())["vars"]
        horizons = tuple(int(h) for h in variables["label_horizons"])
        threshold = float(variables["direction_threshold"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{project_file}: vars label_horizons (a list of bar counts) and direction_threshold must be set ({exc})"
        ) from exc
    if not horizons or min(horizons) < 1:
        raise ValueError(f"{project_file}: label_horizons={list(horizons)} must be positive bar counts")
    return LabelSpec(horizons, threshold)


def direction_to_class(direction) -> np.ndarray:
    """Stored direction (-1, 0, +1; NULL/NaN unknown) -> class index (0, 1, 2; -1 unknown), int64."""
    d = np.asarray(direction, dtype=np.float64)
    out = np.full(d.shape, UNKNOWN_CLASS, dtype=np.int64)
    known = np.isfinite(d)
    if known.any() and not np.isin(d[known], (-1.0, 0.0, 1.0)).all():
        bad = d[known][~np.isin(d[known], (-1.0, 0.0, 1.0))][0]
        raise ValueError(f"direction {bad!r} is not -1, 0 or +1")
    out[known] = d[known].astype(np.int64) + 1
    return out


def class_to_direction(cls) -> np.ndarray:
    """Class index (0, 1, 2) -> direction (-1, 0, +1), int64; -1 (unknown) is rejected."""
    c = np.asarray(cls, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= N_CLASSES):
        raise ValueError(f"class indices must be in 0..{N_CLASSES - 1}; got {c.min()}..{c.max()}")
    return c - 1


def load_labels(warehouse, symbol: str, interval: str, horizon: int) -> pl.DataFrame:
    """``ts, fwd_return, direction, fwd_volatility, label_class`` of one series and horizon, by ts.

    ``label_class`` is :func:`direction_to_class` of ``direction`` (-1 where unknown).
    """
    horizon = label_spec().check_horizon(horizon)
    frame = warehouse.query(
        f"select ts, fwd_return, direction, fwd_volatility from {LABELS_TABLE} "
        "where symbol = ? and interval = ? and horizon = ? order by ts",
        [symbol, interval, horizon],
    )
    classes = direction_to_class(frame["direction"].cast(pl.Float64).fill_null(np.nan).to_numpy())
    return frame.with_columns(pl.Series("label_class", classes))
