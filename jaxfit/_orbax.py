"""Checkpoints through Orbax's ``CheckpointManager`` (the ``orbax`` extra).

The same content as :mod:`jaxfit.checkpoint`'s ``.npz`` (state, record,
history), as an Orbax checkpoint directory that Flax's tooling reads: the
state is a ``StandardSave`` pytree, the record JSON. Orbax commits each step
atomically (a temporary directory renamed), and keeps the latest one.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        raise ValueError(
            "`checkpoint_format='orbax'` needs orbax-checkpoint: "
            'pip install "jaxfit[orbax]"'
        ) from None
    return ocp


def _manager(path: str):
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(path, options=options)


def save(path: str, state: Any, record: dict, history: dict, step: int) -> None:
    """Saves Orbax step ``step`` (replacing one of the same number)."""
    ocp = _orbax()
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(jax.device_get(state)),
        record=ocp.args.JsonSave(record),
        history=ocp.args.StandardSave({k: np.asarray(v) for k, v in history.items()}),
    )
    with _manager(path) as manager:
        if step in manager.all_steps():
            manager.delete(step)
        manager.save(step, args=args)


def load(path: str, like: Any) -> tuple[Any, dict, dict]:
    """The latest step: ``(state, record, history)``, the state in ``like``'s
    structure, shapes and dtypes."""
    ocp = _orbax()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
    with _manager(path) as manager:
        step = manager.latest_step()
        if step is None:
            raise ValueError("no checkpoint step in the directory")
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                record=ocp.args.JsonRestore(),
                history=ocp.args.StandardRestore(),
            ),
        )
    history = {k: np.asarray(v) for k, v in restored["history"].items()}
    return restored["state"], restored["record"], history
