"""The CNN model zoo: every architecture by name and variant, shared heads.

>>> from pipeline.models import build_model, receptive_field
>>> model = build_model("wavenet", "default", in_channels=15, input_length=256)
>>> out = model(windows)          # HeadOutput(direction_logits, expected_return, ...)
"""

from pipeline.models.heads import DIRECTIONS, HeadOutput, MultiTaskHead
from pipeline.models.geometry import count_parameters, flops, receptive_field, total_stride
from pipeline.models.zoo import (
    ZooModel,
    architecture,
    build_model,
    list_models,
    load_model,
    model_config,
    save_model,
    variant_table,
)

__all__ = [
    "DIRECTIONS", "HeadOutput", "MultiTaskHead", "ZooModel", "architecture", "build_model",
    "count_parameters", "flops", "list_models", "load_model", "model_config",
    "receptive_field", "save_model", "total_stride", "variant_table",
]
