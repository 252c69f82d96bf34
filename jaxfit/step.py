"""The single pure training step, and a scan of it over a chunk of batches.

``step(state, batch, mask) -> (state, metrics)`` is the only place where the
loss, the transformation chain and the parameters meet (DESIGN.md). Everything
else in jaxfit moves data to it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks


class FitState(NamedTuple):
    """Everything a fit needs to continue: a pytree of arrays, a scan carry.

    Attributes:
      params: the current parameters.
      opt_state: the transformation chain's state.
      count: int32, updates applied (skipped and empty batches excluded).
      key: the PRNG key of the fit (raw ``uint32[2]``, so it checkpoints as
        plain data); the driver derives each epoch's shuffle from it.
      best_params: the params with the lowest batch loss seen so far.
      best_loss: that loss (``inf`` before the first step).
      skipped: int32, steps skipped because the loss or gradient was
        not finite.
    """

    params: Any
    opt_state: Any
    count: jax.Array
    key: jax.Array
    best_params: Any
    best_loss: jax.Array
    skipped: jax.Array


def init_fit_state(
    params: Any, tx: optax.GradientTransformation, key: Any = None
) -> FitState:
    """The starting :class:`FitState` for ``params`` and ``tx``.

    Args:
      params: a pytree of floating-point arrays.
      tx: an Optax-protocol transformation (jaxfit's or Optax's).
      key: an int seed, a ``jax.random.key`` or a raw ``uint32[2]`` key;
        None means seed 0.

    Returns:
      A :class:`FitState` with ``count = skipped = 0`` and ``best_loss = inf``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> state = jaxfit.init_fit_state({'w': jnp.zeros(2)}, jaxfit.adam(0.1))
      >>> int(state.count), float(state.best_loss)
      (0, inf)
    """
    _checks.params(params)
    params = jax.tree.map(jnp.asarray, params)
    loss_dtype = jnp.result_type(*jax.tree.leaves(params))
    return FitState(
        params=params,
        opt_state=tx.init(params),
        count=_checks.count(),
        key=raw_key(key),
        best_params=params,
        best_loss=jnp.asarray(jnp.inf, jnp.real(jnp.zeros((), loss_dtype)).dtype),
        skipped=_checks.count(),
    )


def raw_key(key: Any) -> jax.Array:
    """A ``uint32[2]`` key from a seed, a typed key or a raw key."""
    if key is None:
        key = 0
    if isinstance(key, int):
        return jax.random.key_data(jax.random.key(key))
    key = (
        jnp.asarray(key)
        if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
        else jax.random.key_data(key)
    )
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(
            "`key` must be an int seed, a jax.random.key or a raw uint32[2] key, "
            f"got shape {key.shape} and dtype {key.dtype}"
        )
    return key


def takes_mask(loss: Callable) -> bool:
    """Whether ``loss`` has a ``mask`` parameter (or ``**kwargs``).

    Not cached: a cache keyed by ``loss`` would keep it (and what it closes
    over) alive, and the look-up costs microseconds.
    """
    try:
        parameters = inspect.signature(loss).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The mean of ``values`` over the rows where ``mask`` is True.

    Padded rows are excluded with ``where``, so a NaN there cannot leak in.
    An all-False mask gives 0.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> jaxfit.masked_mean(jnp.array([1.0, 3.0, 100.0]),
      ...                    jnp.array([True, True, False]))
      Array(2., dtype=float32)
    """
    if mask is None:
        return jnp.mean(values)
    mask = jnp.reshape(mask, mask.shape + (1,) * (values.ndim - mask.ndim))
    mask = jnp.broadcast_to(mask, values.shape)
    total = jnp.sum(jnp.where(mask, values, 0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)


# Scalar fields the chain's state may carry that users want per step (line
# search step size, Levenberg-Marquardt damping, evaluations used).
_REPORTED_FIELDS = ("learning_rate", "damping", "num_evaluations")


def _chain_metrics(opt_state: Any) -> dict[str, jax.Array]:
    metrics = {}
    for name in _REPORTED_FIELDS:
        found = optax.tree.get_all_with_path(opt_state, name)
        scalars = [value for _, value in found if jnp.ndim(value) == 0]
        if len(scalars) == 1:
            metrics[name] = scalars[0]
    return metrics


def make_step(
    loss: Callable[..., jax.Array], tx: optax.GradientTransformation
) -> Callable[..., tuple[FitState, dict[str, jax.Array]]]:
    """The pure step ``step(state, batch, mask=None) -> (state, metrics)``.

    One step: ``value, grad = value_and_grad(loss)(params, batch[, mask])``;
    ``tx.update(grad, opt_state, params, value=, grad=, value_fn=, batch=[,
    mask=])`` (the extra arguments line searches read; ``value_fn`` takes
    ``batch`` and ``mask`` by those names, so Optax's line searches accept
    them too); ``apply_updates``. Then the safeguards:

    - a non-finite loss or gradient skips the step: params and optimizer
      state stay as they were and ``skipped`` counts it (to guard the
      updates of a transformation that can make them non-finite from a
      finite gradient, wrap it in ``optax.apply_if_finite``);
    - a batch whose mask is all False (padding of the last chunk) changes
      nothing at all;
    - ``best_params``/``best_loss`` track the lowest batch loss seen.

    Args:
      loss: ``loss(params, batch)`` returning a scalar, or
        ``loss(params, batch, mask)`` where ``mask`` (bool, one entry per
        row of the batch) marks real rows; padded rows must not count (see
        :func:`masked_mean`). The streaming driver needs the mask form to pad
        a ragged last batch. For a loss without ``mask``, ``step``'s
        ``mask`` only tells an all-padding batch (``any(mask)`` is False),
        so one bool per batch is enough.
      tx: any Optax-protocol transformation.

    Returns:
      ``step``, pure and jit/scan/vmap-compatible. ``metrics`` holds
      ``loss``, ``grad_norm``, ``skipped`` (bool) and the chain's reported
      scalars (``learning_rate`` of a line search, ``damping``, ...).

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> def loss(params, batch, mask):
      ...     x, y = batch
      ...     return jaxfit.masked_mean((params['w'] * x - y) ** 2, mask)
      >>> step = jax.jit(jaxfit.make_step(loss, jaxfit.adam(0.1)))
      >>> state = jaxfit.init_fit_state({'w': jnp.array(0.0)}, jaxfit.adam(0.1))
      >>> batch = (jnp.arange(4.0), 2 * jnp.arange(4.0))
      >>> state, metrics = step(state, batch, jnp.ones(4, bool))
      >>> int(state.count), float(metrics['loss'])
      (1, 14.0)
    """
    if not callable(loss):
        raise ValueError(f"`loss` must be callable, got {loss!r}")
    with_mask = takes_mask(loss)
    tx = optax.with_extra_args_support(tx)

    def objective(params, batch, mask=None):
        return loss(params, batch, mask) if with_mask else loss(params, batch)

    def step(state: FitState, batch: Any, mask: Any = None):
        mask_args = {"mask": mask} if with_mask else {}
        shape = jax.eval_shape(objective, state.params, batch, mask).shape
        if shape != ():
            raise ValueError(f"`loss` must return a scalar, got shape {shape}")
        value, grad = jax.value_and_grad(objective)(state.params, batch, mask)
        # Optax's convention for complex params: the chain gets the conjugate
        # of jax.grad's gradient (a no-op for real params).
        grad = optax.tree.conj(grad)
        updates, opt_state = tx.update(
            grad,
            state.opt_state,
            state.params,
            value=value,
            grad=grad,
            value_fn=objective,
            batch=batch,
            **mask_args,
        )
        params = optax.apply_updates(state.params, updates)
        # One reduction, shared with the metrics: a norm is finite iff every
        # element is (or squares overflow, |g| > ~1e19 in float32). The
        # updates are not checked: a condition that waits for them keeps XLA
        # from fusing the selects below into the update and costs ~2x the
        # step of a small model (see the docstring for guarding updates).
        grad_norm = optax.tree.norm(grad)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        real = jnp.asarray(True) if mask is None else jnp.any(mask)
        apply = finite & real

        def choose(new, old):
            return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

        better = real & jnp.isfinite(value) & (value < state.best_loss)
        new_state = FitState(
            params=choose(params, state.params),
            opt_state=choose(opt_state, state.opt_state),
            count=state.count + apply.astype(jnp.int32),
            key=state.key,
            best_params=jax.tree.map(
                lambda p, b: jnp.where(better, p, b), state.params, state.best_params
            ),
            best_loss=jnp.where(better, value, state.best_loss).astype(
                state.best_loss.dtype
            ),
            skipped=state.skipped + (real & ~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": jnp.where(real, value, jnp.nan).astype(state.best_loss.dtype),
            "grad_norm": grad_norm.astype(state.best_loss.dtype),
            "skipped": real & ~finite,
            "real": real,
            **_chain_metrics(opt_state),
        }
        return new_state, metrics

    return step


def run_chunk(
    step: Callable[..., tuple[FitState, dict[str, jax.Array]]],
    state: FitState,
    batches: Any,
    masks: Any = None,
    *,
    unroll: int = 1,
) -> tuple[FitState, dict[str, jax.Array]]:
    """Applies ``step`` to K batches stacked on a leading axis, in a ``lax.scan``.

    Pure: call it inside your own ``jax.jit``. The streaming driver compiles
    it once per chunk shape and feeds it chunk after chunk.

    Args:
      step: from :func:`make_step`.
      state: a :class:`FitState`.
      batches: the batch pytree with a leading axis of length K.
      masks: bool ``[K, batch_size]`` (or ``[K]`` for a loss without
        ``mask``: one flag per batch) or None.
      unroll: steps per iteration of the scan's loop (``lax.scan``'s
        ``unroll``). A cheap step spends a good part of its time in the
        loop's own bookkeeping; unrolling it a few times saves that, at the
        price of compiling the step that many times.

    Returns:
      The final state and the per-step metrics, each with a leading axis K.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> loss = lambda params, batch: jnp.mean((params - batch) ** 2)
      >>> step = jaxfit.make_step(loss, jaxfit.sgd(0.25))
      >>> state = jaxfit.init_fit_state(jnp.zeros(()), jaxfit.sgd(0.25))
      >>> batches = jnp.full((8, 16), 3.0)  # 8 batches of 16 rows
      >>> state, metrics = jax.jit(jaxfit.run_chunk, static_argnums=0)(
      ...     step, state, batches)
      >>> metrics['loss'].shape, round(float(state.params), 3)
      ((8,), 2.988)
    """
    if masks is None:
        return jax.lax.scan(lambda s, b: step(s, b), state, batches, unroll=unroll)
    return jax.lax.scan(
        lambda s, bm: step(s, *bm), state, (batches, masks), unroll=unroll
    )


# A step of at most this many jaxpr equations (sub-jaxprs included) is
# unrolled _SMALL_STEP_UNROLL times by default: a 3-parameter curve or an MLP
# with Adam is ~100-250, a zoom line search ~400-550, L-BFGS ~600-1000. On
# 2 CPU cores unrolling 4x took a 1024-row curve step from 5.7 to 5.2 us
# (a hand-written scan: 5.3 us) and compiled an MLP with L-BFGS in 10 s
# instead of 4.5 s.
_UNROLL_MAX_EQUATIONS = 300
_SMALL_STEP_UNROLL = 4
# ... but only in a fit of at least this many steps: unrolling saves ~0.5 us
# a step and costs ~0.7 s more compile (the quickstart's clip + Adam curve:
# 1.8 s against 1.1 s for the whole 1,536-step call, compile included), so
# it pays from ~1.4 million steps on.
_UNROLL_MIN_STEPS = 1_000_000


def long_fit(epochs: int, num_batches: int | None) -> bool:
    """Whether the fit runs enough steps to pay for an unrolled loop (an
    iterable's unknown length counts as short)."""
    return num_batches is not None and epochs * num_batches >= _UNROLL_MIN_STEPS


def small_step_unroll(step_jaxpr) -> int:
    """The default ``unroll`` of a step: :data:`_SMALL_STEP_UNROLL` for a
    small one (see above), 1 otherwise."""
    small = _count_equations(step_jaxpr) <= _UNROLL_MAX_EQUATIONS
    return _SMALL_STEP_UNROLL if small else 1


def _count_equations(jaxpr) -> int:
    """Equations of ``jaxpr``, those of its sub-jaxprs included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    count += _count_equations(sub)
    return count
