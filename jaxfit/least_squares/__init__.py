"""The least-squares engine and its drivers.

The engine is pure functions:

* :mod:`~jaxfit.least_squares.normal_equations`: ``J^T J``, ``J^T r`` and
  the cost, dense, over row blocks or matrix-free, robust losses included;
* :mod:`~jaxfit.least_squares.steps`: proposals (the damped
  Levenberg-Marquardt step, the Gauss-Newton step, tie-breaking) and
  judgements (gain ratio, step cap, Nielsen's damping update);
* :mod:`~jaxfit.least_squares.status`: one status table with SciPy's
  meanings, and MINPACK's stopping tests;
* :mod:`~jaxfit.least_squares.covariance`: ``(J^T J)^+`` and SciPy's
  ``pcov`` scaling.

Its drivers, each available with ``method="lm"`` or ``"gn"``: the
Optax-protocol transformations (:mod:`jaxfit.transforms.least_squares`),
the on-device ``lax.while_loop`` of :func:`least_squares_solve` and
:func:`least_squares_solve_many` (:mod:`~jaxfit.least_squares.solve`, behind
``curve_fit``), and the host loop over streamed data passes of
:func:`fit_least_squares` (:mod:`~jaxfit.least_squares.streamed`).
"""

from jaxfit.least_squares.status import STATUS_MESSAGES
from jaxfit.least_squares.steps import (
    METHODS,
    break_ties,
    damped_step,
    gain_ratio,
    gauss_newton_step,
    marquardt_scale,
    nielsen_update,
    step_too_large,
)

__all__ = [
    "METHODS",
    "STATUS_MESSAGES",
    "break_ties",
    "damped_step",
    "gain_ratio",
    "gauss_newton_step",
    "marquardt_scale",
    "nielsen_update",
    "step_too_large",
]
