"""Optax-protocol transformations, one module per family."""

from jaxfit.transforms.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from jaxfit.transforms.clipping import clip, clip_by_global_norm
from jaxfit.transforms.combine import apply_updates, chain, flatten
from jaxfit.transforms.lbfgs import lbfgs, scale_by_lbfgs
from jaxfit.transforms.least_squares import (
    ScaleByGaussNewtonState,
    ScaleByLevenbergMarquardtState,
    scale_by_gauss_newton,
    scale_by_levenberg_marquardt,
)
from jaxfit.transforms.linesearch import (
    LinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from jaxfit.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from jaxfit.transforms.sgd import TraceState, sgd, trace

__all__ = [
    "LinesearchInfo",
    "ScaleByAdamState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByGaussNewtonState",
    "ScaleByLevenbergMarquardtState",
    "ScaleByScheduleState",
    "ScaleByZoomLinesearchState",
    "TraceState",
    "adam",
    "adamw",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "flatten",
    "lbfgs",
    "scale",
    "scale_by_adam",
    "scale_by_backtracking_linesearch",
    "scale_by_gauss_newton",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_levenberg_marquardt",
    "scale_by_schedule",
    "scale_by_zoom_linesearch",
    "sgd",
    "trace",
    "value_and_grad_from_state",
]
