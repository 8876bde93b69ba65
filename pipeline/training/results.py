"""What one training hands back and writes: its ``models.registry`` rows and ``predictions.oos`` (the table
schemas are the warehouse's DDL: :func:`pipeline.warehouse.table_schema`)."""

from __future__ import annotations

import dataclasses

import polars as pl

from pipeline.warehouse import Replacement, table_schema


@dataclasses.dataclass
class TrainingOutcome:
    architecture: str
    registry: pl.DataFrame
    predictions: pl.DataFrame
    fold_table: list[dict]
    loss_curves: dict[int, list[dict]]
    dropped: dict[str, int]
    weights_finite: bool
    train_seconds: float
    skipped: str | None = None  # why nothing was trained (no sample at all), else None


    @classmethod
    def nothing_trained(cls, architecture: str, dropped: dict[str, int], train_seconds: float,
                        reason: str) -> "TrainingOutcome":
        return cls(architecture=architecture, registry=pl.DataFrame(schema=table_schema("models.registry")),
                   predictions=pl.DataFrame(schema=table_schema("predictions.oos")), fold_table=[], loss_curves={},
                   dropped=dropped, weights_finite=True, train_seconds=train_seconds, skipped=reason)


def store_training(warehouse, outcome: TrainingOutcome) -> dict[str, int]:
    """Replace this architecture's registry rows and predictions in one transaction."""
    arch = outcome.architecture
    ids = outcome.registry["model_id"].to_list()
    warehouse.replace_tables([
        Replacement("predictions.oos", outcome.predictions,
                    "model_id in (select model_id from models.registry where architecture = ?) "
                    "or list_contains(?::varchar[], model_id)", [arch, ids]),
        Replacement("models.registry", outcome.registry, "architecture = ?", [arch]),
    ])
    return {"models.registry": outcome.registry.height, "predictions.oos": outcome.predictions.height}
