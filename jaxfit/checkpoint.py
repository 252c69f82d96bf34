"""Atomic save and restore of a fit in progress (NumPy ``.npz``).

A checkpoint holds the :class:`~jaxfit.FitState` leaves, the position in the
data (epoch, chunk) and the metrics so far. It is written to a temporary file
in the same directory and renamed over the target, so a crash mid-write never
leaves a truncated checkpoint: the previous one stays valid.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax
import numpy as np


def save(
    path: str | os.PathLike,
    state: Any,
    position: dict[str, int],
    history: dict[str, np.ndarray],
) -> None:
    """Writes ``state`` (any pytree), ``position`` and ``history`` atomically."""
    path = os.fspath(path)
    leaves = jax.tree.leaves(jax.device_get(state))
    payload = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    payload.update({f"position_{k}": np.asarray(v) for k, v in position.items()})
    payload.update({f"history_{k}": np.asarray(v) for k, v in history.items()})
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
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
    path: str | os.PathLike, like: Any
) -> tuple[Any, dict[str, int], dict[str, np.ndarray]]:
    """Reads a checkpoint into the structure of ``like`` (a fresh state).

    Raises:
      ValueError: if the checkpoint does not match ``like``'s structure,
        shapes or dtypes (a different model, chain or params).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`resume_from` {path!r} does not exist")
    with np.load(path) as archive:
        files = archive.files
        leaves_like, treedef = jax.tree.flatten(like)
        n = sum(1 for k in files if k.startswith("leaf_"))
        if n != len(leaves_like):
            raise ValueError(
                f"`resume_from` {path!r} holds {n} state arrays, the fit expects "
                f"{len(leaves_like)}: a different chain or params?"
            )
        leaves = []
        for i, ref in enumerate(leaves_like):
            value = archive[f"leaf_{i}"]
            if value.shape != np.shape(ref) or value.dtype != np.asarray(ref).dtype:
                raise ValueError(
                    f"`resume_from` {path!r}: state array {i} is {value.dtype}"
                    f"{list(value.shape)}, the fit expects "
                    f"{np.asarray(ref).dtype}{list(np.shape(ref))}"
                )
            leaves.append(value)
        position = {
            k[len("position_") :]: int(archive[k])
            for k in files
            if k.startswith("position_")
        }
        history = {
            k[len("history_") :]: archive[k] for k in files if k.startswith("history_")
        }
    return jax.tree.unflatten(treedef, leaves), position, history
