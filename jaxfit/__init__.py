"""jaxfit: composable Optax-protocol transformations for fitting models in JAX.

Every transformation is a factory returning an ``optax.GradientTransformation``
(pure ``init``/``update`` functions over pytrees), so jaxfit and Optax mix in
one chain, in Flax's ``TrainState`` and ``nnx.Optimizer``, and under
``jit``/``vmap``/``lax.scan``.
"""

from jaxfit.curve_fit import (
    CurveFitResult,
    LeastSquaresSolution,
    curve_fit,
    least_squares_solve,
)
from jaxfit.least_squares_streaming import LeastSquaresFitResult, fit_least_squares
from jaxfit.residuals import (
    jacobian_mode,
    make_batch,
    model_residual,
    normal_matvec,
    residual_and_jacobian,
    residual_loss,
    robust_cost,
    robust_rho,
    robust_scaling,
    weight_and_mask,
)
from jaxfit.step import FitState, init_fit_state, make_step, masked_mean, run_chunk
from jaxfit.streaming import ChunkInfo, FitResult, fit
from jaxfit.transforms import (
    LinesearchInfo,
    ScaleByAdamState,
    ScaleByBacktrackingLinesearchState,
    ScaleByGaussNewtonState,
    ScaleByLevenbergMarquardtState,
    ScaleByScheduleState,
    ScaleByZoomLinesearchState,
    TraceState,
    adam,
    adamw,
    apply_updates,
    chain,
    clip,
    clip_by_global_norm,
    flatten,
    lbfgs,
    scale,
    scale_by_adam,
    scale_by_backtracking_linesearch,
    scale_by_gauss_newton,
    scale_by_learning_rate,
    scale_by_levenberg_marquardt,
    scale_by_schedule,
    scale_by_zoom_linesearch,
    sgd,
    trace,
    value_and_grad_from_state,
)

__version__ = "0.1.0"

__all__ = [
    "ChunkInfo",
    "CurveFitResult",
    "FitResult",
    "FitState",
    "LeastSquaresFitResult",
    "LeastSquaresSolution",
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
    "curve_fit",
    "fit",
    "fit_least_squares",
    "flatten",
    "init_fit_state",
    "jacobian_mode",
    "lbfgs",
    "least_squares_solve",
    "make_batch",
    "make_step",
    "masked_mean",
    "model_residual",
    "normal_matvec",
    "residual_and_jacobian",
    "residual_loss",
    "robust_cost",
    "robust_rho",
    "robust_scaling",
    "run_chunk",
    "scale",
    "scale_by_adam",
    "scale_by_backtracking_linesearch",
    "scale_by_gauss_newton",
    "scale_by_learning_rate",
    "scale_by_levenberg_marquardt",
    "scale_by_schedule",
    "scale_by_zoom_linesearch",
    "sgd",
    "trace",
    "value_and_grad_from_state",
    "weight_and_mask",
]
