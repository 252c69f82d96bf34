"""One status table, with SciPy's ``least_squares`` meanings, and the tests
that set it.

Every driver (``least_squares_solve``, ``curve_fit``, ``fit_least_squares``)
reports these codes; 1 to 4 and 0 mean what they mean in SciPy, -1 is
SciPy's (from MINPACK, seen only when SciPy fits an untraceable model), and
-2 and -3 are jaxfit's own failures (SciPy raises for -2 instead).
"""

from __future__ import annotations

import jax.numpy as jnp

RUNNING = -10  # not a final status: the loop goes on
NOT_FINITE_START = -2
DIVERGED = -3
STATUS_MESSAGES = {
    -3: "The cost became non-finite after a Gauss-Newton step; try method='lm'.",
    -2: "The residuals are not finite at the initial point.",
    -1: "Improper input parameters status returned from `leastsq`",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


def stop_status(
    judgement, base_cost, step_norm, x_norm, grad_norm, tolerances, diverged=False
):
    """MINPACK's stopping tests on one trial step, as a status code.

    ``judgement`` is ``(actual, predicted, ratio)`` of the trial
    (from :mod:`jaxfit.least_squares.steps`); ``tolerances`` is
    ``(ftol, xtol, gtol)``. ``ftol``: the actual and predicted relative cost
    reductions are both at most ``ftol`` (and the ratio at most 2); ``xtol``:
    the step norm is at most ``xtol * (xtol + ||x||)``; ``gtol``: the
    infinity norm of ``J^T r`` is at most ``gtol``. Returns
    :data:`RUNNING` when none holds, :data:`NOT_FINITE_START` where the base
    cost is not finite, and :data:`DIVERGED` where ``diverged`` (a
    Gauss-Newton step to a non-finite cost). Works on JAX values (traced)
    and on Python floats alike.
    """
    actual, predicted, ratio = judgement
    ftol, xtol, gtol = tolerances
    f_ok = (
        (jnp.abs(actual) <= ftol * base_cost)
        & (predicted <= ftol * base_cost)
        & (ratio <= 2)
    )
    x_ok = step_norm <= xtol * (xtol + x_norm)
    g_ok = grad_norm <= gtol
    return jnp.select(
        [~jnp.isfinite(base_cost), diverged, g_ok, f_ok & x_ok, f_ok, x_ok],
        [NOT_FINITE_START, DIVERGED, 1, 4, 2, 3],
        RUNNING,
    ).astype(jnp.int32)
