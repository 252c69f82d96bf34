"""The host driver: ``fit`` streams chunks of batches through one compiled scan.

Data flow (DESIGN.md): source -> fixed-shape host chunks (shuffle, pad, mask)
-> device (a background thread prefetches the next chunk while the current one
runs; the previous state's buffers are donated) -> ``run_chunk`` -> FitState.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfit import _callables, _checks
from jaxfit import checkpoint as _checkpoint
from jaxfit import data as _data
from jaxfit.step import (
    FitState,
    init_fit_state,
    make_step,
    raw_key,
    run_chunk,
    takes_mask,
)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the final params.
      best_params: the params with the lowest batch loss seen.
      best_loss: that loss.
      state: the final :class:`~jaxfit.FitState` (pass it on to continue).
      history: per-step metrics as NumPy arrays (``loss``, ``grad_norm``,
        ``skipped`` and what the chain reports), padding steps removed.
      epochs: epochs completed.
      stopped: why the fit ended: ``'epochs'``, ``'loss_tol'``,
        ``'patience'`` or ``'callback'``.
    """

    params: Any
    best_params: Any
    best_loss: float
    state: FitState
    history: dict[str, np.ndarray]
    epochs: int
    stopped: str


class ChunkInfo(NamedTuple):
    """What the per-chunk ``callback`` receives.

    Attributes:
      epoch: the epoch (from 0).
      chunk: the chunk's index within the epoch.
      state: the :class:`~jaxfit.FitState` after the chunk.
      metrics: per-step arrays (``loss``, ``grad_norm``, ...) of the chunk's
        real steps: the all-padding steps that fill the last chunk are left
        out, as in the history.
    """

    epoch: int
    chunk: int
    state: FitState
    metrics: dict[str, np.ndarray]


# Stands for the chunk of the previous epoch (see `same_chunk` in `fit`).
_SAME_CHUNK = object()


def _epoch_rng(key: np.ndarray, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in np.asarray(key)] + [epoch])


def fit(
    loss: Callable[..., jax.Array],
    tx: optax.GradientTransformation,
    params: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    epochs: int = 1,
    key: Any = None,
    shuffle: bool = True,
    chunk_batches: int | None = None,
    chunk_bytes: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    callback: Callable[[ChunkInfo], bool | None] | None = None,
    loss_tol: float | None = None,
    patience: int | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 1,
    resume_from: str | None = None,
    unroll: int | None = None,
) -> FitResult:
    """Fits ``params`` by running ``tx`` over ``data`` in compiled chunks.

    Each chunk of ``chunk_batches`` batches is one ``lax.scan`` of
    :func:`~jaxfit.make_step`; every chunk has the same shape, so the whole
    fit (all epochs, the ragged last batch, a second ``fit`` with the same
    shapes) compiles once. The next chunk is read and moved to the device
    while the current one runs.

    Args:
      loss: ``loss(params, batch, mask)`` (or ``loss(params, batch)`` when
        the rows divide into batches exactly); see :func:`~jaxfit.make_step`.
      tx: any Optax-protocol transformation (line searches included).
      params: the starting params (a pytree of float arrays).
      data: a tuple or dict of arrays with rows on the first axis (NumPy,
        ``np.memmap``, JAX, h5py datasets), an ``.npz``/``.h5`` path, or an
        iterable of batches (re-iterable for several epochs).
      batch_size: rows per step; for an iterable, the largest batch (default:
        the first batch's size).
      epochs: passes over the data.
      key: seed or PRNG key; drives the shuffle (reproducible).
      shuffle: shuffle blocks and rows within chunks each epoch (arrays).
      chunk_batches: batches per compiled chunk; default from ``chunk_bytes``.
      chunk_bytes: host/device budget for chunks (two are alive at once);
        default 256 MiB.
      mesh: a 1-D ``jax.sharding.Mesh``: batches are split over its devices,
        params replicated, XLA inserts the gradient all-reduce. After
        ``jax.distributed.initialize`` the mesh may span several processes:
        each passes its own ``data`` (its share of the rows) and
        ``batch_size`` is per process, so a step sees ``batch_size *
        jax.process_count()`` rows.
      progress: show a tqdm progress bar with loss and throughput.
      callback: called after each chunk with a :class:`ChunkInfo`; return
        True to stop.
      loss_tol: stop when an epoch's mean loss is at most this.
      patience: stop after this many epochs without a lower mean loss.
      checkpoint_path: write the fit there (atomically) every
        ``checkpoint_every`` chunks, at each epoch's end and when a callback
        stops the fit; a crash leaves the last complete checkpoint.
      checkpoint_every: chunks between checkpoints.
      resume_from: a checkpoint to continue from (same loss, tx, params
        shapes and data); the result equals an uninterrupted fit's.
      unroll: steps per iteration of the chunk's scan loop (see
        :func:`~jaxfit.run_chunk`). None: 4 for a small step (at most
        300 operations in its jaxpr, such as a model with Adam), whose time
        the loop's bookkeeping would otherwise dominate, and 1 for larger
        ones (line searches, L-BFGS), where unrolling mostly multiplies the
        compile time.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: before any work, for mismatched array lengths, an empty
        source, non-numeric arrays, ``batch_size`` <= 0 or larger than the
        data, a loss that returns a non-scalar, or a loss without ``mask``
        when the last batch needs padding.

    Example:
      >>> import numpy as np, jax.numpy as jnp, jaxfit
      >>> x = np.linspace(0, 1, 1000, dtype=np.float32)
      >>> y = 3 * x + 1
      >>> def loss(params, batch, mask):
      ...     x, y = batch
      ...     return jaxfit.masked_mean((params[0] * x + params[1] - y) ** 2, mask)
      >>> result = jaxfit.fit(loss, jaxfit.adam(0.05), jnp.zeros(2), (x, y),
      ...                     batch_size=100, epochs=50, progress=False)
      >>> np.round(np.asarray(result.params), 1)
      array([3., 1.], dtype=float32)
    """
    _checks.positive_int("epochs", epochs)
    _checks.positive_int("checkpoint_every", checkpoint_every)
    if unroll is not None:
        _checks.positive_int("unroll", unroll)
    if patience is not None:
        _checks.positive_int("patience", patience)
    source = _data.open_source(data)
    if getattr(source, "one_shot", False) and epochs > 1:
        raise ValueError(
            "`data` is a one-shot iterator and cannot be read for "
            f"epochs={epochs}; pass a re-iterable (e.g. a list or a loader)"
        )
    plan = _data.plan(source, batch_size, chunk_batches, chunk_bytes)
    batch_size, example, num_batches, k = plan
    rows = getattr(source, "num_rows", None)
    if rows is not None and rows % batch_size and not takes_mask(loss):
        raise ValueError(
            f"`loss` takes no `mask`, but {rows} rows do not divide "
            f"into batches of {batch_size}: add a `mask` parameter (see "
            "jaxfit.masked_mean) so the last batch can be padded"
        )
    # With several processes, batch_size is each process's share of a step.
    if mesh is not None and batch_size * jax.process_count() % mesh.size:
        raise ValueError(
            f"`batch_size`={batch_size} (per process) must divide evenly over "
            f"the mesh's {mesh.size // jax.process_count()} devices per process"
        )

    state = _initial_state(tx)(params, _key_arg(key))
    example_mask = np.ones(batch_size, bool)
    pad = np.zeros(batch_size - _data._check_rows(example), np.int64)
    example = jax.tree.map(
        lambda x: np.concatenate([np.asarray(x), np.asarray(x)[pad]]), example
    )
    # Loss errors, before any work; cached per shapes, so a repeated fit
    # does not trace the step again.
    auto_unroll = _traced_step(loss, tx, _signature((state, example, example_mask)))
    unroll = auto_unroll if unroll is None else unroll

    history: dict[str, list[np.ndarray]] = {}
    position = {"epoch": 0, "chunk": 0}
    if resume_from is not None:
        state, position, saved = _checkpoint.load(resume_from, state)
        history = {name: [values] for name, values in saved.items()}
        state = _fresh_buffers(state)
    batch_sharded = None
    if mesh is not None:
        axis = mesh.axis_names[0]
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        batch_sharded = jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(None, axis)
        )
        state = jax.device_put(state, replicated)

    on_cpu = jax.devices()[0].platform == "cpu"

    def put(chunk):
        if batch_sharded is None:
            # may_alias: on CPU an aligned host chunk becomes the device
            # buffer without a copy; an unaligned one (a view of the user's
            # arrays, a memmap slice) is aligned by NumPy first, which is
            # faster than XLA's own copy.
            if on_cpu:
                chunk = jax.tree.map(_data.cpu_aligned, chunk)
            return jax.device_put(chunk, may_alias=True)
        if jax.process_count() > 1:
            # Several hosts: each passes its own rows; the global batch is
            # their concatenation along the batch axis.
            return jax.tree.map(
                lambda a: jax.make_array_from_process_local_data(batch_sharded, a),
                chunk,
            )
        return jax.device_put(chunk, batch_sharded)

    # Rows read in order, one chunk per epoch without padding: every epoch's
    # chunk is the same, so it moves to the device once per fit (it is both
    # the chunk running and the one read ahead: within the budget).
    same_chunk = (
        not shuffle
        and isinstance(source, _data.ArraySource)
        and source.num_rows == k * batch_size
    )
    device_chunk = None
    run = _compiled_runner(loss, tx, unroll)
    bar = _progress_bar(progress, epochs, num_batches, k)
    stopped = "epochs"
    epoch_means: list[float] = []
    chunks_done = 0
    epochs_done = position["epoch"]
    stream = None
    try:
        key_host = np.asarray(state.key)
        first_epoch = position["epoch"]

        def epoch_chunks():
            # All epochs in one stream, so the next epoch's first chunk is read
            # while this epoch's last one runs. The key never changes during a
            # fit, so every epoch's shuffle is known ahead.
            for epoch in range(first_epoch, epochs):
                rng = _epoch_rng(key_host, epoch) if shuffle else None
                if same_chunk and device_chunk is not None:
                    chunks = iter([_SAME_CHUNK])  # on the device already
                else:
                    chunks = source.chunks(batch_size, k, rng)
                skip = position["chunk"] if epoch == first_epoch else 0
                for _ in range(skip):
                    next(chunks)
                for index, chunk in enumerate(chunks, skip):
                    yield epoch, index, chunk
                yield epoch, None, None  # the end of the epoch

        # A loss without a mask needs one flag per batch (is it real?), not a
        # bool per row: 1/8 of a float32 curve's bytes less to move. Under a
        # mesh each process's rows differ, so the rows' masks stay.
        flags_only = not takes_mask(loss) and mesh is None

        def put_item(item):
            epoch, index, chunk = item
            if chunk is None:
                return epoch, index, None
            nonlocal device_chunk
            if chunk is _SAME_CHUNK:
                return epoch, index, device_chunk
            batches, masks = chunk
            on_device = put((batches, masks.any(axis=1) if flags_only else masks))
            if same_chunk:
                device_chunk = on_device
            return epoch, index, on_device

        epoch_losses = []
        pending = None  # the last dispatched chunk whose metrics are unread

        def drain():
            """Reads the pending chunk's metrics into the history."""
            nonlocal pending
            if pending is None:
                return None
            epoch_of, metrics = pending
            pending = None
            host = jax.device_get(metrics)
            real = host.pop("real")
            host = {name: values[real] for name, values in host.items()}
            for name, values in host.items():
                history.setdefault(name, []).append(values)
            epoch_losses.append(host["loss"])
            if bar is not None:
                bar.update(int(real.sum()))
                bar.set_postfix(loss=f"{np.nanmean(host['loss']):.4g}", epoch=epoch_of)
            return host

        # A chunk that stays on the device has nothing to read ahead: no
        # thread to start and hand over to.
        stream = (
            (put_item(item) for item in epoch_chunks())
            if same_chunk
            else _data.prefetch(epoch_chunks(), put_item)
        )
        for epoch, index, chunk in stream:
            if chunk is not None:
                batches, masks = chunk
                del chunk
                state, metrics = run(state, batches, masks)
                del batches, masks  # done: the prefetcher may reuse the budget
                # Dispatch is asynchronous: read the previous chunk's metrics
                # while this one runs, so the device never waits on the host.
                drain()
                pending = (epoch, metrics)
                chunks_done += 1
                due = checkpoint_path and chunks_done % checkpoint_every == 0
                if due or callback is not None:
                    # Both need this chunk's state, which the next chunk
                    # would consume (donation): finish it here.
                    host = drain()
                    if due:
                        _save(checkpoint_path, state, epoch, index + 1, history)
                    if callback is not None and callback(
                        ChunkInfo(epoch, index, state, host)
                    ):
                        stopped = "callback"
                        _save_if(checkpoint_path, state, epoch, index + 1, history)
                        break
                continue
            drain()
            losses = np.concatenate(epoch_losses) if epoch_losses else np.array([])
            epoch_losses = []
            epoch_means.append(float(np.nanmean(losses)) if losses.size else math.inf)
            epochs_done = epoch + 1
            _save_if(checkpoint_path, state, epoch + 1, 0, history)
            if loss_tol is not None and epoch_means[-1] <= loss_tol:
                stopped = "loss_tol"
                break
            if patience is not None and len(epoch_means) > patience:
                if min(epoch_means[-patience:]) >= min(epoch_means[:-patience]):
                    stopped = "patience"
                    break
    finally:
        if stream is not None:
            stream.close()  # stops the prefetch thread (early stop, error)
        if bar is not None:
            bar.close()
    return FitResult(
        params=state.params,
        best_params=state.best_params,
        best_loss=float(state.best_loss),
        state=state,
        history={n: np.concatenate(v) for n, v in history.items()},
        epochs=epochs_done,
        stopped=stopped,
    )


# A step of at most this many jaxpr equations (sub-jaxprs included) is
# unrolled _SMALL_STEP_UNROLL times by default: a 3-parameter curve or an MLP
# with Adam is ~100-250, a zoom line search ~400-550, L-BFGS ~600-1000. On
# 2 CPU cores unrolling 4x took a 1024-row curve step from 5.7 to 5.2 us
# (a hand-written scan: 5.3 us) and compiled an MLP with L-BFGS in 10 s
# instead of 4.5 s.
_UNROLL_MAX_EQUATIONS = 300
_SMALL_STEP_UNROLL = 4


def _signature(tree) -> tuple:
    """Hashable shapes and dtypes of a pytree of arrays."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves)


# Programs per (loss, tx), holding neither: the user's closures (and the
# arrays they hold) go when the user drops them, as with a plain jax.jit.
_programs = _callables.CallableCache()


def _tx_parts(tx) -> tuple[tuple, Callable]:
    """``tx``'s callables (held weakly by the cache) and how to rebuild it.

    An Optax transformation is a NamedTuple of ``init`` and ``update``; its
    class is kept (Optax tells extra-args transformations by ``isinstance``).
    """
    if isinstance(tx, tuple) and all(callable(f) for f in tx):
        return tuple(tx), type(tx)
    return (tx,), lambda proxy: proxy.target()


def _cached(name, loss, tx, static, build):
    """``build(loss_proxy, tx_proxy, *static)``, once per loss, tx and static."""
    parts, rebuild = _tx_parts(tx)

    def build_proxies(loss_proxy, *rest):
        # rest: tx's parts, then name and static
        tx_parts, static_values = rest[: len(parts)], rest[len(parts) + 1 :]
        return build(loss_proxy, rebuild(*tx_parts), *static_values)

    return _programs.get((loss, *parts), (name, *static), build_proxies)


def _traced_step(loss, tx, signature) -> int:
    """Traces the step once per (loss, tx, shapes): raises the loss's errors
    before any work, and returns the default ``unroll`` for its size."""

    def trace(loss, tx, signature):
        treedef, leaves = signature
        args = jax.tree.unflatten(
            treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves]
        )
        jaxpr = jax.make_jaxpr(make_step(loss, tx))(*args)
        small = _count_equations(jaxpr.jaxpr) <= _UNROLL_MAX_EQUATIONS
        return _SMALL_STEP_UNROLL if small else 1

    return _cached("trace", loss, tx, (signature,), trace)


def _count_equations(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    count += _count_equations(sub)
    return count


def _initial_state(tx):
    """``init_fit_state`` for ``tx``, compiled: one dispatch, not one per leaf.

    Its buffers are fresh copies: the scan donates the state, which must
    neither delete the caller's params nor hold one buffer twice (params and
    best_params).
    """

    def build(_, tx):
        return jax.jit(lambda params, key: _copies(init_fit_state(params, tx, key)))

    return _cached("init", None, tx, (), build)


def _key_arg(key):
    """``raw_key(key)``, made once per int seed (``_initial_state`` copies it,
    so the cached array is never donated)."""
    if key is None or isinstance(key, int):
        return _seed_key(key)
    return raw_key(key)


@functools.lru_cache(maxsize=16)
def _seed_key(seed):
    return raw_key(seed)


def _copies(tree):
    return jax.tree.map(jnp.copy, tree)


_fresh_buffers = jax.jit(_copies)


def _compiled_runner(loss, tx, unroll):
    """One jitted chunk runner per (loss, tx, unroll), so a second ``fit``
    with the same loss, chain and shapes reuses the compiled program."""

    def build(loss, tx, unroll):
        step = make_step(loss, tx)
        # The previous state's buffers are donated: the scan updates in place.
        return jax.jit(
            lambda state, b, m: run_chunk(step, state, b, m, unroll=unroll),
            donate_argnums=0,
        )

    return _cached("run", loss, tx, (unroll,), build)


def _save(path, state, epoch, chunk, history):
    flat = {n: np.concatenate(v) for n, v in history.items()}
    _checkpoint.save(path, state, {"epoch": epoch, "chunk": chunk}, flat)


def _save_if(path, state, epoch, chunk, history):
    if path:
        _save(path, state, epoch, chunk, history)


def _progress_bar(enabled, epochs, num_batches, k):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    del k
    return tqdm(total=None, unit="step", desc="jaxfit.fit")
