"""Line searches: backtracking (Armijo) and zoom (strong Wolfe).

Both are Optax-protocol transformations with Optax's arguments, in Optax's
order, that scale the incoming direction ``updates`` by a step size found by
evaluating the objective along it. They read the keyword-only extra arguments
``value`` (the objective at ``params``), ``grad`` (its gradient there, in
Optax's convention: ``conj(jax.grad(f))`` for complex params) and
``value_fn`` (the objective), plus any extra keyword argument that
``value_fn``'s signature accepts (for example the current ``batch``); other
extra arguments are ignored, since other members of a chain may consume them.

What they guarantee, beyond Optax's line searches:

- **Compile once.** The state has fixed dtypes and shapes from ``init`` on
  (int32 counts, bool flags, step sizes and values in the params' real dtype,
  at least float32), so a jitted step compiles once and the state is a valid
  ``lax.scan`` carry.
- **No silent increase of the loss.** A direction that is not a descent
  direction (``Re <grad, updates> >= 0``, for example Adam's) is replaced by
  the negative gradient rescaled to the direction's norm
  (``descent_safeguard="negative_gradient"``) or not taken at all
  (``"skip"``). When the search runs out of trials, backtracking takes its
  last (shortest) trial if that lowered the value, zoom the lowest trial
  satisfying sufficient decrease; otherwise no step is taken.
- **Non-finite values shrink the step.** A trial whose value (or slope) is NaN
  or infinite fails, and the next trial is ten times closer to the last
  finite point; parameters never receive a non-finite update. A non-finite
  ``value`` or ``grad`` at ``params`` gives a zero update.
- **Monitoring.** ``state.learning_rate`` is the accepted step size and
  ``state.info`` a :class:`LinesearchInfo` (evaluations used, whether the
  conditions were met, whether the direction was a descent direction).
- ``value_fn`` may return ``(value, aux)`` with ``has_aux=True``.

The package holds one module per search (``backtracking``, ``zoom``), their
shared pieces (``_common``) and :func:`value_and_grad_from_state`
(``from_state``); everything public is importable from here.
"""

from jaxfit.transforms.linesearch._common import LinesearchInfo
from jaxfit.transforms.linesearch.backtracking import (
    ScaleByBacktrackingLinesearchState,
    scale_by_backtracking_linesearch,
)
from jaxfit.transforms.linesearch.from_state import value_and_grad_from_state
from jaxfit.transforms.linesearch.zoom import (
    ScaleByZoomLinesearchState,
    scale_by_zoom_linesearch,
)

__all__ = [
    "LinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByZoomLinesearchState",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
]
