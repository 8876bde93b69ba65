"""Run a great-expectations 1.x suite on a polars frame and say which rows failed.

dagster-ge does not support GX 1.x, so checks build an ephemeral context here
and run inside Dagster asset checks. Failures name the expectation, the
column(s) and example rows (with their key columns when given), so a failed
check tells the user what to fix.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence

import polars as pl

import great_expectations as gx
from great_expectations.data_context.types.base import (DataContextConfig, InMemoryStoreBackendDefaults,
                                                        ProgressBarsConfig)


@dataclasses.dataclass(frozen=True)
class SuiteOutcome:
    suite_name: str
    success: bool
    evaluated: int
    failures: list[dict]

    def summary(self) -> str:
        if self.success:
            return f"{self.suite_name}: all {self.evaluated} expectations passed"
        lines = [f"{self.suite_name}: {len(self.failures)} of {self.evaluated} expectations failed"]
        for failure in self.failures:
            lines.append(
                f"- {failure['expectation']} on {failure['columns']}: {failure['unexpected_count']} rows, "
                f"e.g. {failure['examples']}"
            )
        return "\n".join(lines)


def _columns_of(kwargs: dict) -> str:
    for key in ("column", "column_list"):
        if key in kwargs:
            return str(kwargs[key])
    if "column_A" in kwargs:
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    return "table"


def run_expectations(
    frame: pl.DataFrame,
    expectations: Sequence,
    suite_name: str,
    key_columns: Sequence[str] = (),
    max_examples: int = 5,
) -> SuiteOutcome:
    """Validate ``frame`` against ``expectations`` (gx.expectations.* objects)."""
    # the settings go to the context itself (no analytics, no progress bars), not to this process's environment
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults()))
    name = f"{suite_name}-{uuid.uuid4().hex[:8]}"
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation.copy())  # a suite takes ownership (sets ids)
    validation = gx.ValidationDefinition(data=batch, suite=suite, name=name)
    pdf = frame.to_pandas()
    result = validation.run(
        batch_parameters={"dataframe": pdf},
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": max_examples},
    )
    failures: list[dict] = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        details = item.result or {}
        indexes = list(details.get("unexpected_index_list") or [])[:max_examples]
        if key_columns and indexes and all(isinstance(i, int) for i in indexes):
            examples = frame[indexes].select(list(key_columns)).to_dicts()
        else:
            examples = list(details.get("partial_unexpected_list") or [])[:max_examples]
            if not examples and "observed_value" in details:
                examples = [{"observed_value": details["observed_value"]}]
        if item.exception_info and item.exception_info.get("raised_exception"):
            examples = [item.exception_info.get("exception_message")]
        failures.append(
            {
                "expectation": config.type,
                "columns": _columns_of(config.kwargs),
                "unexpected_count": int(details.get("unexpected_count") or 0),
                "examples": json.loads(json.dumps(examples, default=str)),  # JSON-safe (timestamps as text)
            }
        )
    return SuiteOutcome(suite_name, bool(result.success), len(result.results), failures)
