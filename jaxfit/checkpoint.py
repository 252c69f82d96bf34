"""Atomic save and restore of a fit in progress (NumPy ``.npz``).

A checkpoint holds the :class:`~jaxfit.FitState` leaves, bit for bit in any
dtype (bfloat16 and float16 as their bits), and one JSON record: where the
fit is (epoch, batches done in it), what its future depends on (the epoch
mean losses that ``patience`` and ``loss_tol`` read, the stop reason), what
determines its data stream (rows, batch size, shuffle, key, the data's
shapes and dtypes, the shuffle window) and the tree structures of its params
and optimizer state, so a resume with other data, renamed params or another
optimizer is refused instead of continuing wrongly. The per-step history
rides along.

It is written to a temporary file beside the target and renamed over it, so a
crash mid-write leaves the previous checkpoint valid; the next write removes
temporaries a crash left behind. Files get the permissions of a normally
created file (the umask applies).
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "jaxfit-checkpoint/2"


def _encode(x: np.ndarray) -> tuple[np.ndarray, str]:
    """``x`` as an array ``np.load`` reads without pickle, and its dtype's
    name: dtypes NumPy lacks (bfloat16, float8) travel as unsigned bits."""
    x = np.asarray(x)
    if x.dtype.kind in "biufc" and x.dtype.num < 256:  # a NumPy built-in
        return x, x.dtype.name
    return x.view(f"u{x.dtype.itemsize}"), x.dtype.name


def _decode(x: np.ndarray, dtype: str) -> np.ndarray:
    return x if x.dtype.name == dtype else x.view(jnp.dtype(dtype))


def _temporaries(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.*.tmp")


FORMATS = ("npz", "orbax")


def save(
    path: str | os.PathLike,
    state: Any,
    record: dict[str, Any],
    history: dict[str, np.ndarray],
    format: str = "npz",
) -> None:
    """Writes ``state`` (any pytree), ``record`` (JSON-able) and ``history``
    atomically to ``path``: an ``.npz`` file, or with ``format="orbax"`` an
    Orbax checkpoint directory."""
    path = os.fspath(path)
    if format == "orbax":
        from jaxfit import _orbax

        # Orbax numbers its steps: the steps done and epochs ended only grow.
        step = record.get("epoch", 0) + len(history.get("loss", ()))
        _orbax.save(path, state, {"format": FORMAT, **record}, history, step)
        return
    for stale in glob.glob(_temporaries(path)):  # left by a killed write
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass
    encoded = [_encode(x) for x in jax.tree.leaves(jax.device_get(state))]
    metrics = {k: _encode(v) for k, v in history.items()}
    meta = {
        "format": FORMAT,
        "dtypes": [dtype for _, dtype in encoded],
        "history_dtypes": {k: dtype for k, (_, dtype) in metrics.items()},
        **record,
    }
    payload = {f"leaf_{i}": x for i, (x, _) in enumerate(encoded)}
    payload.update({f"history_{k}": x for k, (x, _) in metrics.items()})
    payload["meta"] = np.asarray(json.dumps(meta))
    tmp = _temporaries(path).replace("*", secrets.token_hex(8))
    # 0o666 less the umask, as open() gives; mkstemp would give 0600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(
    path: str | os.PathLike, like: Any, name: str = "resume_from"
) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """Reads a checkpoint into the structure of ``like`` (a fresh state).

    Returns ``(state, record, history)``.

    Raises:
      ValueError: naming ``name`` and the file, if it is missing, empty,
        truncated, corrupt or not a jaxfit checkpoint, or if its arrays do
        not match ``like``'s number, shapes or dtypes.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`{name}` {path!r} does not exist")
    if os.path.isdir(path):  # an Orbax checkpoint directory
        return _load_orbax(path, like, name)
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if meta.get("format") != FORMAT:
                raise KeyError("format")
            leaves = [archive[f"leaf_{i}"] for i in range(len(meta["dtypes"]))]
            history = {
                k: _decode(archive[f"history_{k}"], dtype)
                for k, dtype in meta["history_dtypes"].items()
            }
            leaves = [
                _decode(x, d) for x, d in zip(leaves, meta["dtypes"], strict=True)
            ]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
        # NumPy's own text for pickled data advises allow_pickle, which a
        # checkpoint never needs: say what the file is instead.
        why = (
            "it holds pickled Python objects"
            if "pickle" in str(error)
            else f"{type(error).__name__}: {error}"
        )
        raise ValueError(
            f"`{name}` {path!r} is not a readable jaxfit checkpoint (empty, "
            f"truncated, corrupt or another file): {why}"
        ) from None
    leaves_like, treedef = jax.tree.flatten(like)
    if len(leaves) != len(leaves_like):
        raise ValueError(
            f"`{name}` {path!r} holds {len(leaves)} state arrays, the fit expects "
            f"{len(leaves_like)}: a different chain or params?"
        )
    for i, (value, ref) in enumerate(zip(leaves, leaves_like, strict=True)):
        want = (np.asarray(ref).dtype, np.shape(ref))
        if (value.dtype, value.shape) != want:
            raise ValueError(
                f"`{name}` {path!r}: state array {i} is {value.dtype}"
                f"{list(value.shape)}, the fit expects {want[0]}{list(want[1])}"
            )
    return jax.tree.unflatten(treedef, leaves), meta, history


def _load_orbax(path, like, name):
    from jaxfit import _orbax

    try:
        state, record, history = _orbax.load(path, like)
        if record.get("format") != FORMAT:
            raise KeyError("format")
    except Exception as error:  # Orbax raises many types for a bad directory
        raise ValueError(
            f"`{name}` {path!r} is not a readable jaxfit Orbax checkpoint, or "
            f"not one of this fit's state: {type(error).__name__}: {error}"
        ) from None
    return state, record, history


def check_same(name: str, path: str, what: str, saved: dict, now: dict) -> None:
    """Raises a ValueError listing the entries of ``saved`` and ``now`` that
    differ (``what`` says what they describe)."""
    differ = [
        f"{key}: {saved.get(key)!r} in the checkpoint, {now.get(key)!r} now"
        for key in sorted(set(saved) | set(now))
        if saved.get(key) != now.get(key)
    ]
    if differ:
        raise ValueError(
            f"`{name}` {path!r} was written by a fit with another {what}: "
            + "; ".join(differ)
        )
