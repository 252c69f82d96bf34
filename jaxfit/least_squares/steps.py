"""The step rules: proposals (a damped or Gauss-Newton step) and judgements.

Pure functions of the normal equations and the damping state, shared by
every driver (the transformations, the on-device loop, the streamed passes):
a new method is one new proposal here, not a new loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Every driver runs any of: Levenberg-Marquardt, plain Gauss-Newton, or a
# trust region (``curve_fit``'s retry when LM runs out of evaluations).
METHODS = ("lm", "gn", "tr")


# Up to this many params the SPD solve is an unrolled Cholesky. Its size
# grows as n^3: at n = 8 it added ~0.9 s to XLA's compile of a curve_fit,
# while LAPACK's per-matrix calls under vmap cost ~15% of a batched fit.
_UNROLLED_SOLVE_N = 4


def _spd_solve(A, b):
    """Solves ``A x = b`` for a symmetric positive definite ``A``.

    For small ``n`` an unrolled Cholesky: a few dozen scalar operations that
    vmap turns into elementwise ones over the batch, instead of one LAPACK
    call per matrix (LM's damped ``J^T J`` is SPD; if rounding makes it not,
    the step is NaN and LM rejects it and raises the damping).
    """
    n = b.shape[0]
    if n > _UNROLLED_SOLVE_N:
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), b)
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        d = A[j, j] - sum(L[j][k] * L[j][k] for k in range(j))
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, n):
            L[i][j] = (A[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    y = [None] * n
    for i in range(n):
        y[i] = (b[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return jnp.stack(x)


def marquardt_scale(scale: jax.Array, column_norms2: jax.Array) -> jax.Array:
    """Marquardt's diagonal ``D``: the running maximum of ``diag(J^T J)``.

    ``column_norms2`` is that diagonal for the residuals' own Jacobian, not
    the robustly reweighted one: a robust loss scales each row by
    ``sqrt(max(rho' + 2 rho'' z, eps))``, which is ``sqrt(eps)`` for every
    residual beyond ``f_scale`` under ``cauchy`` or ``arctan``. Started far
    from the optimum, all rows can be such outliers; a ``D`` ~1e-15 then
    made the damping grow by ~1e16 before the first step was accepted, and
    once inliers brought ``D`` back to O(1) that damping froze the fit.
    A zero column (a parameter the residuals ignore) keeps unit scale.
    """
    scale = jnp.maximum(scale, column_norms2)
    return jnp.where(scale > 0, scale, 1.0)


def damped_step(hessian, gradient, damping, scale) -> jax.Array:
    """The Levenberg-Marquardt step: solves ``(J^T J + lambda D) d = -J^T r``."""
    return _spd_solve(hessian + jnp.diag(damping * scale), -gradient)


def gauss_newton_step(hessian, gradient) -> jax.Array:
    """The minimum-norm Gauss-Newton step ``-(J^T J)^+ J^T r``."""
    return -jnp.linalg.pinv(hessian, hermitian=True) @ gradient


def break_ties(step: jax.Array, hessian: jax.Array) -> jax.Array:
    """``step`` plus a tiny move that separates parameters with tied columns.

    A model with interchangeable terms (``a e^{-bx} + c e^{-dx}`` from
    ``a = c``, ``b = d``) has identical Jacobian columns on its symmetric
    subspace, and ``J^T r`` is symmetric there too, so every exact step (LM,
    Gauss-Newton) keeps the symmetry: the fit ends at a saddle, the optimum
    of a model with one term fewer. SciPy escapes only through the rounding
    of its finite differences. Here, where two columns of ``J`` are parallel
    to within rounding (``|cos| >= 1 - 16 eps`` from ``hessian = J^T J``),
    the step gets a move of relative size ``sqrt(eps)`` inside the null space
    of ``J`` that separates every tied column: ``J`` times the move is zero,
    so the linear model, and the step's predicted reduction, are unchanged
    to first order, while LM's own dynamics amplify the asymmetry once the
    columns differ. The move is deterministic (index-dependent weights) and
    zero for a zero ``step`` (a stationary point). Without ties ``step`` is
    returned as is (bit for bit).

    Args:
      step: the step ``d`` for the flat params.
      hessian: ``J^T J`` (possibly robustly reweighted) at the same point.

    Returns:
      ``d`` plus the move (``d`` itself where no columns are tied).

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> J = jnp.array([[1.0, 1.0, 0.0], [2.0, 2.0, 1.0]])  # columns 0, 1 tied
      >>> step = jaxfit.least_squares.break_ties(
      ...     jnp.array([1.0, 1.0, 1.0]), J.T @ J)
      >>> bool(step[0] != step[1]), float(step[2]), float((J @ step)[0])
      (True, 1.0, 2.0)
    """
    n = step.shape[0]
    eps = jnp.finfo(hessian.dtype).eps
    # A strided diagonal and sums, not jnp.diag and a matvec: fewer kernels
    # in the LM loop body (XLA compile time of a first curve_fit).
    norm = jnp.sqrt(hessian.reshape(-1)[:: n + 1])
    norm = jnp.where(norm > 0, norm, 1.0)  # a zero column ties with nothing
    cos = hessian / (norm[:, None] * norm[None, :])
    sign = jnp.where(jnp.abs(cos) >= 1 - 16 * eps, jnp.sign(cos), 0.0)
    count = jnp.sum(jnp.abs(sign), axis=1)  # a live column ties with itself
    tied = count > 1
    # Distinct weights minus their signed mean over each group of tied
    # columns, in units where every column has norm 1: J @ move = 0.
    w = jnp.arange(n, dtype=hessian.dtype)
    move = jnp.where(tied, w - jnp.sum(sign * w, axis=1) / jnp.maximum(count, 1), 0)
    # Tied, some |move| >= 1/2; the largest becomes sqrt(eps) of the step.
    size = jnp.sqrt(eps) * jnp.max(jnp.abs(norm * step))
    size = size / jnp.maximum(jnp.max(jnp.abs(move)), 0.5)
    return jnp.where(tied, step + (size * move / norm).astype(step.dtype), step)


def step_too_large(step: jax.Array, x: jax.Array) -> jax.Array:
    """Whether a trial step moves some parameter by over ~10x its size.

    True where ``|d_i| > 10 (|x_i| + ||x||_inf)`` for some ``i`` (never at
    ``x = 0``: there is no size to compare with). LM rejects such a step and
    raises the damping, as for a step that fails to reduce the cost. A
    nearly undamped first step can otherwise throw a parameter orders of
    magnitude away, onto a plateau where the model no longer depends on it
    (NIST BoxBOD from ``(1, 1)``: ``b2`` to ~100, where ``exp(-b2 x) ~ 0``),
    and the fit stalls there although the step reduced the cost. The
    ``||x||_inf`` term lets a parameter started at zero move as far as the
    largest parameter's size, so fits from such starts keep their steps.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> too_large = jaxfit.least_squares.step_too_large
      >>> x = jnp.array([1.0, 1.0])
      >>> bool(too_large(jnp.array([0.0, 103.0]), x)), bool(too_large(-x, x))
      (True, False)
    """
    size = jnp.abs(x) + jnp.max(jnp.abs(x), initial=0.0)
    return jnp.any((jnp.abs(step) > 10 * size) & (size > 0))


def gain_ratio(cost, new_cost, step, gradient, damping, scale):
    """``(actual, predicted, ratio)`` cost reductions of a damped step.

    ``ratio`` is ``-inf`` where the model predicts no reduction or the new
    cost is not finite, so such a step is always rejected.
    """
    actual = cost - new_cost
    predicted = 0.5 * jnp.dot(step, damping * scale * step - gradient)
    ratio = jnp.where(predicted > 0, actual / predicted, -jnp.inf)
    ratio = jnp.where(jnp.isfinite(new_cost), ratio, -jnp.inf)
    return actual, predicted, ratio


def nielsen_update(ratio, damping, nu):
    """Nielsen's (1999) damping update: ``(accepted, damping, nu)``.

    An accepted step (``ratio > 0``) shrinks ``lambda`` by
    ``max(1/3, 1 - (2 rho - 1)**3)`` and resets ``nu`` to 2; a rejected one
    multiplies ``lambda`` by ``nu`` and doubles ``nu``.
    """
    accepted = ratio > 0
    shrink = jnp.maximum(1 / 3, 1 - (2 * ratio - 1) ** 3)
    new_damping = jnp.where(accepted, damping * shrink, damping * nu)
    # Capped so that endless rejections at a minimum never make inf * 0.
    new_damping = jnp.minimum(new_damping, 1e30)
    new_nu = jnp.where(accepted, 2.0, 2 * nu)
    return accepted, new_damping, new_nu


def lm_proposal(hessian, gradient, damping, scale, column_norms2):
    """Levenberg-Marquardt's trial step and the updated Marquardt scale.

    The damped step of :func:`damped_step` with the scale of
    :func:`marquardt_scale`, tied columns separated by :func:`break_ties`.
    """
    scale = marquardt_scale(scale, column_norms2)
    return break_ties(damped_step(hessian, gradient, damping, scale), hessian), scale


def gn_proposal(hessian, gradient):
    """The Gauss-Newton step, tied columns separated by :func:`break_ties`."""
    return break_ties(gauss_newton_step(hessian, gradient), hessian)


def lm_judgement(cost, new_cost, step, gradient, damping, scale, nu, x):
    """``(actual, predicted, ratio, accepted, damping, nu)`` of an LM trial.

    The gain ratio of :func:`gain_ratio` (``-inf`` for a step that
    :func:`step_too_large` refuses) and Nielsen's damping update.
    """
    actual, predicted, ratio = gain_ratio(
        cost, new_cost, step, gradient, damping, scale
    )
    ratio = jnp.where(step_too_large(step, x), -jnp.inf, ratio)
    accepted, damping, nu = nielsen_update(ratio, damping, nu)
    return actual, predicted, ratio, accepted, damping, nu


def gn_judgement(cost, new_cost, step, gradient, damping, scale, nu, x):
    """As :func:`lm_judgement` for a Gauss-Newton step: taken whenever the
    new cost is finite (an undamped method has nothing to adjust)."""
    del x
    actual, predicted, ratio = gain_ratio(cost, new_cost, step, gradient, 0.0, scale)
    return actual, predicted, ratio, jnp.isfinite(new_cost), damping, nu


def initial_radius(x, column_norms2):
    """The trust region's first radius: ``||D x0||`` (1 at ``x0 = 0``), as
    SciPy's ``trf`` with ``x_scale='jac'``; ``D`` is Marquardt's scale at
    ``x0``, where ``column_norms2`` is ``diag(J^T J)``."""
    d = jnp.sqrt(marquardt_scale(jnp.zeros_like(column_norms2), column_norms2))
    radius = jnp.linalg.norm(d * x)
    return jnp.where(radius > 0, radius, 1.0)


# Bisection steps on log(lambda) for the step on the trust region's boundary:
# 100 halve a log-width of at most ~1400 (float64) to under 1e-27 (each step
# is a few n-vector operations).
_RADIUS_BISECTIONS = 100


def tr_proposal(hessian, gradient, radius, scale, column_norms2):
    """The trust-region step and the updated Marquardt scale.

    Minimises the linear model ``g.d + d.(J^T J) d / 2`` subject to
    ``||D d|| <= radius``: the minimum-norm Gauss-Newton step where it lies
    inside, else the damped step ``-(J^T J + lambda D^2)^-1 g`` whose scaled
    length is the radius, ``lambda`` found by bisection on the eigenvalues
    of the scaled ``J^T J`` (as SciPy's ``trf`` solves it on the SVD of
    ``J``). Tied columns are separated by :func:`break_ties`.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> A, g = jnp.diag(jnp.array([4.0, 1.0])), jnp.array([-4.0, -1.0])
      >>> steps = jaxfit.least_squares.steps
      >>> step, scale = steps.tr_proposal(A, g, 10.0, jnp.zeros(2), jnp.diag(A))
      >>> step.round(4)  # the Gauss-Newton step, inside the region
      Array([1., 1.], dtype=float32)
      >>> step, _ = steps.tr_proposal(A, g, 1.0, jnp.zeros(2), jnp.diag(A))
      >>> round(float(jnp.linalg.norm(jnp.sqrt(scale) * step)), 4)
      1.0
    """
    scale = marquardt_scale(scale, column_norms2)
    d = jnp.sqrt(scale)
    w, v = jnp.linalg.eigh(hessian / (d[:, None] * d[None, :]))
    w = jnp.maximum(w, 0.0)
    c = v.T @ (gradient / d)
    tiny = jnp.finfo(w.dtype).eps * w[-1] * w.size
    inverse = jnp.where(w > tiny, 1.0 / jnp.where(w > tiny, w, 1.0), 0.0)
    inside = jnp.linalg.norm(c * inverse) <= radius
    length = lambda lam: jnp.linalg.norm(c / (w + lam))
    # The scaled step's length falls from that of the Gauss-Newton step to
    # 0 as lambda grows; it is at most the radius at lambda = ||c|| / radius.
    # Bisection on log(lambda) down to the dtype's smallest normal number:
    # a midpoint sqrt(lo * hi) underflows there and stalls the bracket.
    log_hi = jnp.log(jnp.linalg.norm(c) / radius)
    log_lo = jnp.log(jnp.finfo(w.dtype).tiny).astype(w.dtype)

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        outside = length(jnp.exp(mid)) > radius
        return jnp.where(outside, mid, lo), jnp.where(outside, hi, mid)

    _, log_lam = jax.lax.fori_loop(0, _RADIUS_BISECTIONS, bisect, (log_lo, log_hi))
    p = -(v @ jnp.where(inside, c * inverse, c / (w + jnp.exp(log_lam))))
    return break_ties(p / d, hessian), scale


def tr_judgement(cost, new_cost, step, gradient, radius, scale, nu, x, hessian):
    """``(actual, predicted, ratio, accepted, radius, nu)`` of a trust-region
    trial, with SciPy ``trf``'s radius update: a quarter of the step's
    scaled length where ``ratio < 1/4``, doubled where ``ratio > 3/4`` and
    the step reached the boundary. A step that lowers the cost is taken."""
    del x
    actual = cost - new_cost
    predicted = -(jnp.dot(gradient, step) + 0.5 * jnp.dot(step, hessian @ step))
    ratio = jnp.where(predicted > 0, actual / predicted, -jnp.inf)
    ratio = jnp.where(jnp.isfinite(new_cost), ratio, -jnp.inf)
    length = jnp.linalg.norm(jnp.sqrt(scale) * step)
    boundary = length >= 0.95 * radius
    radius = jnp.where(
        ratio < 0.25,
        0.25 * length,
        jnp.where((ratio > 0.75) & boundary, 2 * radius, radius),
    )
    accepted = (actual > 0) & jnp.isfinite(new_cost)
    return actual, predicted, ratio, accepted, radius, nu


def propose(method, hessian, gradient, damping, scale, column_norms2):
    """``method``'s trial step and the updated Marquardt scale.

    One signature for every method, so a driver names the method and no
    more: ``"lm"`` is :func:`lm_proposal`, ``"tr"`` :func:`tr_proposal`
    (``damping`` is the radius), ``"gn"`` :func:`gn_proposal` (which keeps
    the scale only for the gain ratio's bookkeeping).
    """
    if method == "lm":
        return lm_proposal(hessian, gradient, damping, scale, column_norms2)
    if method == "tr":  # ``damping`` holds the radius
        return tr_proposal(hessian, gradient, damping, scale, column_norms2)
    return gn_proposal(hessian, gradient), marquardt_scale(scale, column_norms2)


def judge(method, cost, new_cost, step, gradient, damping, scale, nu, x, hessian):
    """``method``'s judgement of a trial step: :func:`lm_judgement`,
    :func:`gn_judgement` or :func:`tr_judgement` (the only one that reads
    ``hessian``, ``J^T J`` at ``x``, for the model's predicted reduction)."""
    if method == "tr":
        return tr_judgement(
            cost, new_cost, step, gradient, damping, scale, nu, x, hessian
        )
    judgement = lm_judgement if method == "lm" else gn_judgement
    return judgement(cost, new_cost, step, gradient, damping, scale, nu, x)
