"""The host driver: ``fit`` streams chunks of batches through one compiled scan.

Data flow (DESIGN.md): source -> fixed-shape host chunks (shuffle, pad, mask)
-> device (a background thread prefetches the next chunk while the current one
runs; the previous state's buffers are donated) -> ``run_chunk`` -> FitState.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfit import _callables, _checks
from jaxfit import checkpoint as _checkpoint
from jaxfit import data as _data
from jaxfit import feeder as _feeder
from jaxfit import step as _step
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
    checkpoint_format: str = "npz",
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
        and data stream; the chunking may differ); the result equals an
        uninterrupted fit's, and a finished fit is returned as it was.
      checkpoint_format: ``'npz'`` (a NumPy file) or ``'orbax'`` (an Orbax
        checkpoint directory, which Flax's tooling reads; needs the
        ``orbax`` extra). ``resume_from`` reads either.
      unroll: steps per iteration of the chunk's scan loop (see
        :func:`~jaxfit.run_chunk`). None: 4 for a small step (at most
        300 operations in its jaxpr, such as a model with Adam), whose time
        the loop's bookkeeping would otherwise dominate, in a fit of at
        least a million steps; otherwise 1: for larger steps (line searches,
        L-BFGS) unrolling mostly multiplies the compile time, and a shorter
        fit does not win back the longer compile.

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
    # Every argument that can be checked before any work, each error naming it.
    _check_model(loss, tx, params)
    _check_data_args(data, key, shuffle, mesh)
    _check_control(callback, loss_tol, patience, epochs, checkpoint_every, unroll)
    _check_checkpoint_path(checkpoint_path)
    _checks.one_of("checkpoint_format", checkpoint_format, _checkpoint.FORMATS)
    source = _data.open_source(data)
    if getattr(source, "one_shot", False) and epochs > 1:
        raise ValueError(
            "`data` is a one-shot iterator and cannot be read for "
            f"epochs={epochs}; pass a re-iterable (e.g. a list or a loader)"
        )
    batch_size, example, num_batches, k = _data.plan(
        source, batch_size, chunk_batches, chunk_bytes, shuffle=shuffle
    )
    _check_batching(source, loss, batch_size, mesh)
    state, finite = _initial_state(tx)(params, _key_arg(key))
    if not finite:
        raise ValueError("`params` contains NaN or inf: a fit cannot start there")
    example = _padded_example(example, batch_size)
    # Loss errors, before any work; cached per shapes, so a repeated fit
    # does not trace the step again.
    signature = _signature((state, example, np.ones(batch_size, bool)))
    default_unroll = unroll is None
    unroll = _traced_step(loss, tx, signature) if default_unroll else unroll
    if default_unroll and not _step.long_fit(epochs, num_batches):
        unroll = 1  # a short fit: the unrolled loop's compile outweighs its gain

    stream = _stream_id(source, batch_size, shuffle, state.key, example)
    track = _Track(window=k, stream=stream, structures=_structures(state))
    if resume_from is not None:
        state, track = _resume(resume_from, state, stream)
        reason = track.stop_reason(epochs, loss_tol, patience)
        if reason is not None:  # a finished fit: returned as it was
            return track.result(state, reason)
    state, sharding = _placed(state, mesh)
    feeder = _feeder.Feeder(
        source,
        batch_size,
        k,
        epochs,
        start=(track.epoch, track.step),
        rng_key=np.asarray(state.key) if shuffle else None,
        window=track.window,
        # A loss without a mask needs one flag per batch (is it real?), not a
        # bool per row: 1/8 of a float32 curve's bytes less to move. Under a
        # mesh each process's rows differ, so the rows' masks stay.
        flags_only=not takes_mask(loss) and mesh is None,
        sharding=sharding,
    )
    run = _Run(
        _compiled_runner(loss, tx, unroll),
        feeder,
        track,
        _progress_bar(progress, epochs, num_batches, k),
        callback,
        (checkpoint_path, checkpoint_every, checkpoint_format),
        (epochs, loss_tol, patience),
    )
    try:
        state, reason = run.all(state)
    finally:
        run.close()
    return track.result(state, reason)


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
        return _step.small_step_unroll(jaxpr.jaxpr)

    return _cached("trace", loss, tx, (signature,), trace)


def _initial_state(tx):
    """``init_fit_state`` for ``tx`` and whether the params are all finite,
    compiled: one dispatch, not one per leaf.

    Its buffers are fresh copies: the scan donates the state, which must
    neither delete the caller's params nor hold one buffer twice (params and
    best_params).
    """

    def start(tx, params, key):
        if key.shape == ():  # an int seed: seeded here, not in a program of its own
            key = jax.random.key_data(jax.random.key(key))
        # Strong types: weakly typed params (jnp.asarray(1.0), Python floats)
        # would make the first chunk's program differ from the next ones'.
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.result_type(p)), params)
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
        )
        return _copies(init_fit_state(params, tx, key)), finite

    def build(_, tx):
        return jax.jit(functools.partial(start, tx))

    return _cached("init", None, tx, (), build)


def _key_arg(key):
    """What ``_initial_state`` takes for ``key``: an int seed that fits in
    int32 as is (seeded inside that program: compiling a seeding program of
    its own took ~55 ms of a fit's first call), else ``raw_key(key)``."""
    if key is None:
        key = 0
    if isinstance(key, int) and -(2**31) <= key < 2**31:
        return np.int32(key)
    return raw_key(key)


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


def _progress_bar(enabled, epochs, num_batches, k):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    del k
    return tqdm(total=None, unit="step", desc="jaxfit.fit")


def _placed(state, mesh):
    """The state replicated over ``mesh``, and where batches go (split over
    its axis); without a mesh, as they are (the default device)."""
    if mesh is None:
        return state, None
    spec = jax.sharding.PartitionSpec
    replicated = jax.sharding.NamedSharding(mesh, spec())
    batches = jax.sharding.NamedSharding(mesh, spec(None, mesh.axis_names[0]))
    return jax.device_put(state, replicated), batches


def _check_model(loss, tx, params):
    if not callable(loss):
        raise ValueError(f"`loss` must be callable, got {loss!r}")
    if not (
        callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))
    ):
        hint = (
            ": it looks like a factory, call it (e.g. jaxfit.adam(1e-3))"
            if callable(tx)
            else ""
        )
        raise ValueError(
            f"`tx` must be an Optax transformation (with init and update), got "
            f"{tx!r}{hint}"
        )
    if isinstance(params, (str, bytes)) or not jax.tree.leaves(params):
        raise ValueError(
            f"`params` must be a pytree of floating-point arrays, got {params!r}"
        )
    _checks.params(params)


def _check_data_args(data, key, shuffle, mesh):
    if isinstance(data, list) and len(data) > 1:
        first, second = (jax.tree.structure(b) for b in data[:2])
        shapes = [[np.shape(x)[1:] for x in jax.tree.leaves(b)] for b in data[:2]]
        if first != second or shapes[0] != shapes[1]:
            raise ValueError(
                "`data` is a list whose items differ in structure or shape, so "
                "it is not an iterable of batches: pass arrays as a tuple "
                "(x, y) or a dict"
            )
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"`shuffle` must be True or False, got {shuffle!r}")
    _check_key(key)
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh or None, got {mesh!r}")


def _check_control(callback, loss_tol, patience, epochs, checkpoint_every, unroll):
    if callback is not None and not callable(callback):
        raise ValueError(f"`callback` must be callable or None, got {callback!r}")
    if loss_tol is not None:
        if isinstance(loss_tol, (bool, np.bool_)):
            raise ValueError(f"`loss_tol` must be a real number, got {loss_tol!r}")
        _checks.real("loss_tol", loss_tol)
    if patience is not None:
        _checks.positive_int("patience", patience)
    _checks.positive_int("epochs", epochs)
    _checks.positive_int("checkpoint_every", checkpoint_every)
    if unroll is not None:
        _checks.positive_int("unroll", unroll)


def _check_checkpoint_path(checkpoint_path):
    if checkpoint_path is None:
        return
    directory = os.path.dirname(os.path.abspath(os.fspath(checkpoint_path)))
    if not os.path.isdir(directory):
        raise ValueError(
            f"`checkpoint_path` {checkpoint_path!r}: directory {directory!r} "
            "does not exist"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"`checkpoint_path` {checkpoint_path!r}: directory {directory!r} "
            "is not writable"
        )


def _check_key(key):
    if key is None or (
        isinstance(key, (int, np.integer)) and not isinstance(key, bool)
    ):
        return
    dtype = getattr(key, "dtype", None)
    if dtype is not None and (
        jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        or (np.dtype(dtype) == np.uint32 and np.shape(key) == (2,))
    ):
        return
    raise ValueError(
        "`key` must be an int seed, a jax.random.key or a raw uint32[2] key, "
        f"got {key!r}"
    )


def _check_batching(source, loss, batch_size, mesh):
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


def _padded_example(example, batch_size):
    """The example batch padded to ``batch_size`` rows (a step's shapes)."""
    pad = np.zeros(batch_size - _data._check_rows(example), np.int64)
    return jax.tree.map(
        lambda x: np.concatenate([np.asarray(x), np.asarray(x)[pad]]), example
    )


def _stream_id(source, batch_size, shuffle, key, example) -> dict:
    """What determines the stream of batches (not how it is cut in chunks)."""
    leaves, treedef = jax.tree.flatten(example)
    rows = getattr(source, "num_rows", None)
    return {
        "rows": rows,
        "batch_size": int(batch_size),
        "shuffle": bool(shuffle) and rows is not None,
        "key": [int(k) for k in np.asarray(key)],
        "data": _structure(treedef)
        + " "
        + ", ".join(f"{np.dtype(x.dtype).name}{list(np.shape(x)[1:])}" for x in leaves),
    }


def _structure(tree_or_def) -> str:
    """A tree structure as text that is the same in every process."""
    treedef = (
        tree_or_def
        if isinstance(tree_or_def, jax.tree_util.PyTreeDef)
        else jax.tree.structure(tree_or_def)
    )
    return re.sub(r" at 0x[0-9a-f]+", "", str(treedef))


@dataclasses.dataclass
class _Track:
    """Where a fit is and everything its future depends on: all of it goes
    into a checkpoint, so a resumed fit equals an uninterrupted one."""

    window: int  # batches per shuffle window
    stream: dict = dataclasses.field(default_factory=dict)
    structures: dict = dataclasses.field(default_factory=dict)
    epoch: int = 0  # the epoch in progress (epochs completed)
    step: int = 0  # its batches done
    epoch_means: list = dataclasses.field(default_factory=list)
    epoch_losses: list = dataclasses.field(default_factory=list)  # this epoch's
    history: dict = dataclasses.field(default_factory=dict)
    stopped: str = ""

    def add(self, metrics: dict[str, np.ndarray]) -> None:
        for name, values in metrics.items():
            self.history.setdefault(name, []).append(values)
        self.epoch_losses.append(metrics["loss"])

    def end_epoch(self) -> None:
        losses = np.concatenate(self.epoch_losses) if self.epoch_losses else []
        self.epoch_means.append(float(np.nanmean(losses)) if len(losses) else math.inf)
        self.epoch_losses, self.epoch, self.step = [], self.epoch + 1, 0

    def stop_reason(self, epochs, loss_tol, patience) -> str | None:
        """Why the fit stops here, or None (decided at an epoch's end only)."""
        means = self.epoch_means
        if self.step:
            return None
        if means and loss_tol is not None and means[-1] <= loss_tol:
            return "loss_tol"
        if patience is not None and len(means) > patience:
            if min(means[-patience:]) >= min(means[:-patience]):
                return "patience"
        return "epochs" if self.epoch >= epochs else None

    def flat_history(self) -> dict[str, np.ndarray]:
        return {n: np.concatenate(v) for n, v in self.history.items()}

    def record(self) -> dict:
        keys = ("window", "stream", "structures", "epoch", "step", "epoch_means")
        return {k: getattr(self, k) for k in keys} | {"stopped": self.stopped}

    def result(self, state, reason) -> FitResult:
        return FitResult(
            params=state.params,
            best_params=state.best_params,
            best_loss=float(state.best_loss),
            state=state,
            history=self.flat_history(),
            epochs=self.epoch,
            stopped=reason,
        )


def _resume(path, state, stream):
    """The checkpointed state and track, checked against this fit."""
    saved, record, history = _checkpoint.load(path, state)
    path = os.fspath(path)
    _checkpoint.check_same("resume_from", path, "data stream", record["stream"], stream)
    _checkpoint.check_same(
        "resume_from",
        path,
        "params or optimizer",
        record["structures"],
        _structures(state),
    )
    track = _Track(
        window=record["window"],
        stream=stream,
        structures=record["structures"],
        epoch=record["epoch"],
        step=record["step"],
        epoch_means=list(record["epoch_means"]),
        history={name: [values] for name, values in history.items()},
        stopped=record["stopped"],
    )
    if track.step:  # the losses of the epoch in progress
        track.epoch_losses = [history["loss"][len(history["loss"]) - track.step :]]
    return _fresh_buffers(saved), track


def _structures(state) -> dict:
    return {
        "params": _structure(state.params),
        "opt_state": _structure(state.opt_state),
    }


class _Run:
    """The loop over the feeder: runs each chunk, reads its metrics one chunk
    late (so the device never waits on the host), checkpoints and stops."""

    def __init__(self, runner, feeder, track, bar, callback, checkpointing, stopping):
        self.runner, self.feeder, self.track, self.bar = runner, feeder, track, bar
        self.callback = callback
        self.path, self.every, self.format = checkpointing
        self.stopping = stopping  # (epochs, loss_tol, patience)
        self.pending = None  # the last dispatched chunk's metrics, unread
        self.chunks_done = 0

    def all(self, state):
        for item in self.feeder:
            if item.batches is None:
                self.drain()
                reason = self.end_epoch(state)
                if reason is not None:
                    return state, reason
                continue
            state, metrics = self.runner(state, item.batches, item.masks)
            epoch, index, steps = item.epoch, item.index, item.steps
            del item  # the chunk is the device's now
            # Dispatch is asynchronous: read the previous chunk's metrics
            # while this one runs.
            self.drain()
            self.pending = (epoch, metrics)
            self.track.step += steps
            self.chunks_done += 1
            due = self.path and self.chunks_done % self.every == 0
            if due or self.callback is not None:
                # Both need this chunk's state, which the next chunk would
                # consume (donation): finish it here.
                host = self.drain()
                if due:
                    self.save(state)
                info = ChunkInfo(epoch, index, state, host)
                if self.callback is not None and self.callback(info):
                    self.track.stopped = "callback"
                    if self.path:
                        self.save(state)
                    return state, "callback"
        return state, "epochs"

    def drain(self):
        """Reads the pending chunk's metrics into the track; the device is
        done with that chunk, so its memory goes back to the feeder."""
        if self.pending is None:
            return None
        epoch, metrics = self.pending
        self.pending = None
        host = jax.device_get(metrics)
        self.feeder.release()
        real = host.pop("real")
        host = {name: values[real] for name, values in host.items()}
        self.track.add(host)
        if self.bar is not None:
            self.bar.update(int(real.sum()))
            self.bar.set_postfix(loss=f"{np.nanmean(host['loss']):.4g}", epoch=epoch)
        return host

    def end_epoch(self, state):
        self.track.end_epoch()
        reason = self.track.stop_reason(*self.stopping)
        self.track.stopped = reason or ""
        if self.path:
            self.save(state)
        return reason

    def save(self, state):
        _checkpoint.save(
            self.path,
            state,
            self.track.record(),
            self.track.flat_history(),
            self.format,
        )

    def close(self):
        self.feeder.close()
        if self.bar is not None:
            self.bar.close()
