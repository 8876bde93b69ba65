"""The README's model table is the zoo's own (``python -m pipeline.models --table``), row for row."""

from __future__ import annotations

from pathlib import Path

from pipeline.models.catalogue import trainable_models, trainable_table
from pipeline.models.zoo import variant_table

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.startswith("| ") and line.split("|")[3].strip() in ("yes", "no")]


def test_the_readme_model_table_equals_the_generated_one():
    generated = _rows(variant_table(15, 256))
    assert generated, "variant_table printed no model row"
    documented = _rows(README.read_text())
    assert documented == generated, (
        "README.md's model table is stale: regenerate it with `.venv/bin/python -m pipeline.models --table`\n"
        f"only in README: {sorted(set(documented) - set(generated))}\n"
        f"only in the zoo: {sorted(set(generated) - set(documented))}")


def test_the_readme_trained_model_table_equals_the_catalogue():
    generated = [line.strip() for line in trainable_table().splitlines() if line.startswith("| models/")]
    assert len(generated) == len(trainable_models()) > 0
    documented = [line.strip() for line in README.read_text().splitlines() if line.startswith("| models/")]
    assert documented == generated, (
        "README.md's trained-model table is stale: regenerate it with `.venv/bin/python -m pipeline.models --trained`")
