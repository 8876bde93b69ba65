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
