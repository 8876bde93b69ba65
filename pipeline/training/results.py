"""What one training hands back and writes: its ``models.registry`` rows and ``predictions.oos`` (the table
schemas are the warehouse's DDL: :func:`pipeline.warehouse.table_schema`). Storing a training stores a model
version and runs the promotion gate (:mod:`pipeline.training.lifecycle`)."""

from __future__ import annotations

import dataclasses

import polars as pl

from pipeline.warehouse import table_schema


@dataclasses.dataclass
class TrainingOutcome:
    architecture: str
    registry: pl.DataFrame  # the walk-forward folds' rows (role 'fold')
    predictions: pl.DataFrame
    fold_table: list[dict]
    loss_curves: dict[int, list[dict]]
    dropped: dict[str, int]
    weights_finite: bool
    train_seconds: float
    skipped: str | None = None  # why nothing was trained (no sample at all), else None
    # the model version (None where nothing was trained); identical to a stored one: skipped None, no rows
    version: str | None = None
    interval: str | None = None
    code_version: str | None = None
    data_fingerprint: str | None = None
    settings: str | None = None  # the recipe, JSON
    trigger: str = "manual"
    live: pl.DataFrame | None = None  # the live refit's registry row(s) (role 'live')
    test_labels: pl.DataFrame | None = None  # symbol, ts, label_class, fwd_return of the test bars (the gate)
    horizon: int = 1

    @classmethod
    def nothing_trained(cls, architecture: str, dropped: dict[str, int], train_seconds: float,
                        reason: str | None, version: str | None = None) -> "TrainingOutcome":
        return cls(architecture=architecture, registry=pl.DataFrame(schema=table_schema("models.registry")),
                   predictions=pl.DataFrame(schema=table_schema("predictions.oos")), fold_table=[], loss_curves={},
                   dropped=dropped, weights_finite=True, train_seconds=train_seconds, skipped=reason, version=version)

    @property
    def reused(self) -> bool:
        """Identical to a version stored already: nothing was trained, nothing is written."""
        return self.skipped is None and self.registry.height == 0 and self.version is not None


def store_training(warehouse, outcome: TrainingOutcome, settings=None, force: bool = False) -> dict:
    """Store ``outcome`` as a model version, judge it against the champion and apply retention, all of its rows
    in one transaction (:func:`pipeline.training.lifecycle.store_version`). Returns the rows written per table and
    the promotion decision under ``"promotion"``."""
    from pipeline.training.lifecycle import store_version

    return store_version(warehouse, outcome, settings, force=force)
