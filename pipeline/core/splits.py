"""Walk-forward splits with purging and embargo (expanding or rolling training window).

Fold ``k`` tests on ``[test_start_k, test_start_k + test_size)`` with
``test_start_k = n - (n_folds - k) * test_size`` (the last fold ends at the
last row; fold 0 keeps at least ``train_min`` training rows) and trains on every bar before
``test_start_k - purge - embargo``. ``purge`` removes the bars whose labels
(over ``(t, t + horizon]``) reach into the test window, so set it to at least
the label horizon; ``embargo`` adds a further gap against serial correlation.
Training therefore never sees a bar whose label overlaps the test window.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # row indices, ascending
    test: np.ndarray  # row indices, ascending

    @property
    def train_end(self) -> int:
        """One past the last training row."""
        return int(self.train[-1]) + 1

    @property
    def test_range(self) -> tuple[int, int]:
        return int(self.test[0]), int(self.test[-1]) + 1


def walk_forward_splits(n: int, n_folds: int, train_min: int, test_size: int | None = None, purge: int = 0,
                        embargo: int = 0, rolling: bool = False) -> list[Fold]:
    """``n_folds`` expanding-window folds over ``n`` rows; see the module docstring.

    ``rolling=True`` keeps only the newest ``train_min`` training rows of each fold (a fixed-length window).
    """
    for name, value in (("n", n), ("n_folds", n_folds), ("train_min", train_min)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer")
    if purge < 0 or embargo < 0:
        raise ValueError(f"purge={purge}, embargo={embargo}: must be >= 0")
    if test_size is None:
        test_size = (n - train_min - purge - embargo) // n_folds
    if test_size < 1:
        raise ValueError(f"n={n} rows leave no test rows for {n_folds} folds after train_min={train_min}")
    first_test = n - n_folds * test_size
    if first_test - purge - embargo < train_min:
        raise ValueError(
            f"n={n} rows are too few for train_min={train_min}, purge={purge}, embargo={embargo} "
            f"plus {n_folds} folds of {test_size} test rows"
        )
    folds = []
    for k in range(n_folds):
        start = first_test + k * test_size
        train_end = start - purge - embargo
        train_start = max(0, train_end - train_min) if rolling else 0
        folds.append(Fold(k, np.arange(train_start, train_end), np.arange(start, start + test_size)))
    return folds


def validation_tail(train: np.ndarray, fraction: float, purge: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training rows into (fit, validation): the last ``fraction`` validates early stopping.

    ``purge`` rows between them are dropped, so no fit row's label reaches into the validation tail.
    """
    train = np.asarray(train)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction={fraction!r}: must be in (0, 1)")
    n_val = max(1, int(round(train.shape[0] * fraction)))
    fit_end = train.shape[0] - n_val - purge
    if fit_end < 1:
        raise ValueError(f"{train.shape[0]} training rows are too few for a validation tail of {n_val} "
                         f"plus a purge of {purge}")
    return train[:fit_end], train[train.shape[0] - n_val:]


@dataclasses.dataclass(frozen=True)
class GridFold:
    """One walk-forward fold on a time grid, as grid timestamps (ms): what every strategy of a market shares.

    ``fit`` and ``validation`` are the fold's training time split by :func:`validation_tail`; ``test`` its
    test block. Each is an inclusive ``(first_ts, last_ts)`` pair of grid timestamps; a bar belongs to a part
    when its ts lies in the pair (bars between grid points never exist: the grid is every strategy's bars).
    """

    index: int
    fit: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]

    @property
    def train(self) -> tuple[int, int]:
        """The whole training time, fit plus validation tail (with the purge between them)."""
        return self.fit[0], self.validation[1]


def grid_folds(grid_ms: np.ndarray, n_folds: int, train_min_fraction: float, horizon: int, embargo: int = 0,
               validation_fraction: float = 0.15, rolling: bool = False) -> list[GridFold]:
    """The models' folds over a time grid: :func:`walk_forward_splits` on the sorted distinct timestamps
    (purge = ``horizon``, plus ``embargo``), each fold's training time ending in its validation tail.

    This is the split definition of the trained models (``pipeline.training.walk_forward.time_folds``
    cuts the same folds on the distinct sample timestamps of every symbol), exposed as timestamps so the
    baselines fit and trade on exactly the models' folds: one test span per market.
    """
    grid = np.unique(np.asarray(grid_ms, dtype=np.int64))
    n = grid.shape[0]
    if n == 0:
        raise ValueError("grid_folds: the time grid is empty (no bar has a complete input window and a label)")
    train_min = max(1, int(n * train_min_fraction))
    out = []
    for fold in walk_forward_splits(n, n_folds, train_min, purge=horizon, embargo=embargo, rolling=rolling):
        fit, val = validation_tail(fold.train, validation_fraction, purge=horizon)
        out.append(GridFold(fold.index, (int(grid[fit[0]]), int(grid[fit[-1]])),
                            (int(grid[val[0]]), int(grid[val[-1]])),
                            (int(grid[fold.test[0]]), int(grid[fold.test[-1]]))))
    return out


def in_range(ts_ms: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Mask of the bars whose ts lies in the inclusive ``span`` (first_ts, last_ts)."""
    ts_ms = np.asarray(ts_ms)
    return (ts_ms >= span[0]) & (ts_ms <= span[1])
