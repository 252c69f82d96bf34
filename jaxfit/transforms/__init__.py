"""Optax-protocol transformations, one module per family."""

from jaxfit.transforms.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from jaxfit.transforms.clipping import clip, clip_by_global_norm
from jaxfit.transforms.combine import apply_updates, chain
from jaxfit.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from jaxfit.transforms.sgd import TraceState, sgd, trace

__all__ = [
    "ScaleByAdamState",
    "ScaleByScheduleState",
    "TraceState",
    "adam",
    "adamw",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "sgd",
    "trace",
]
