"""Checkpoints: a resumed fit equals an uninterrupted one, bit for bit, under
every stopping rule and dtype; other data or settings are refused; broken
files get one clear error; writes leave nothing behind."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_streaming import PARAMS, TX, loss, make_data

import jaxfit

KW = dict(batch_size=64, epochs=3, key=7, chunk_batches=2, progress=False)


def assert_same_fit(a, b):
    chex.assert_trees_all_equal(a.state, b.state)
    assert a.history.keys() == b.history.keys()
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])
    assert (a.epochs, a.stopped) == (b.epochs, b.stopped)


class Interrupt(Exception):
    pass


def crash_at(epoch, chunk):
    """A callback that interrupts the fit after that chunk."""

    def crash(info):
        if (info.epoch, info.chunk) == (epoch, chunk):
            raise Interrupt

    return crash


@pytest.fixture(params=["npz", "orbax"])
def fmt(request):
    """Both checkpoint formats run the same resume tests."""
    return request.param


def ckpt(tmp_path, fmt, name="fit"):
    return str(tmp_path / (f"{name}.ckpt" if fmt == "npz" else name))


def interrupt(path, data, at, params=PARAMS, tx=TX, loss=loss, **kwargs):
    """Runs a fit that an exception stops after chunk ``at`` (epoch, chunk),
    checkpointing to ``path``."""
    with pytest.raises(Interrupt):
        jaxfit.fit(
            loss,
            tx,
            params,
            data,
            checkpoint_path=path,
            callback=crash_at(*at),
            **kwargs,
        )


def interrupted_then_resumed(path, data, at, params=PARAMS, tx=TX, **kwargs):
    """``interrupt``, then a resume from its checkpoint, same arguments."""
    interrupt(path, data, at, params, tx, **kwargs)
    return jaxfit.fit(loss, tx, params, data, resume_from=path, **kwargs)


def test_resume_after_an_exception_matches_an_uninterrupted_fit(tmp_path, fmt):
    data = make_data(1000)
    full = jaxfit.fit(loss, TX, PARAMS, data, **KW)
    kwargs = dict(KW, checkpoint_format=fmt)
    resumed = interrupted_then_resumed(ckpt(tmp_path, fmt), data, (1, 3), **kwargs)
    assert_same_fit(resumed, full)


# A fit that a patience of 1 stops at epoch 4 of 12 (noisy data, a large
# step), and one that loss_tol stops at epoch 3.
STOPPING = {
    "epochs": dict(epochs=3),
    "patience": dict(epochs=12, patience=1),
    "loss_tol": dict(epochs=12, loss_tol=0.02),
}
NOISY_TX = jaxfit.adam(0.3)


def noisy_data():
    x, y = make_data(1000)
    return x, y + np.random.default_rng(1).normal(0, 0.1, y.shape).astype(y.dtype)


@pytest.mark.parametrize("rule", sorted(STOPPING))
def test_resume_under_every_stopping_rule_equals_an_uninterrupted_fit(tmp_path, rule):
    kwargs = dict(KW, **STOPPING[rule])
    data = noisy_data()
    full = jaxfit.fit(loss, NOISY_TX, PARAMS, data, **kwargs)
    assert full.stopped == rule and full.epochs >= 2
    path = str(tmp_path / "fit.ckpt")
    resumed = interrupted_then_resumed(path, data, (1, 2), tx=NOISY_TX, **kwargs)
    assert_same_fit(resumed, full)
    # The documented idiom run on a finished fit: it comes back unchanged,
    # without a step (the callback would see one).
    done = ckpt(tmp_path, fmt, "done")
    jaxfit.fit(loss, NOISY_TX, PARAMS, data, checkpoint_path=done, **kwargs)
    again = jaxfit.fit(
        loss,
        NOISY_TX,
        PARAMS,
        data,
        resume_from=done,
        checkpoint_path=done,
        callback=lambda info: pytest.fail("a finished fit ran a step"),
        **kwargs,
    )
    assert_same_fit(again, full)


KILLED_RUN = textwrap.dedent(
    """
    import os, sys, numpy as np, jax, jax.numpy as jnp, jaxfit
    sys.path.insert(0, {tests!r})
    from test_checkpoint import run_to_be_killed
    run_to_be_killed({path!r}, {rule!r}, {dtype!r}, {fmt!r})
    """
)


def run_to_be_killed(path, rule, dtype, fmt="npz", die_at=(1, 3)):
    """The fit the killed subprocess runs (and the test runs whole)."""
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)

    def die(info):
        if die_at is not None and (info.epoch, info.chunk) == die_at:
            os._exit(9)  # as if killed: no cleanup, no exception handling

    kwargs = dict(KW, **STOPPING[rule])
    callback = die if path else None
    return jaxfit.fit(
        loss,
        NOISY_TX,
        params,
        noisy_data(),
        checkpoint_path=path,
        checkpoint_format=fmt,
        callback=callback,
        **kwargs,
    )


@pytest.mark.parametrize(
    "rule,dtype,fmt",
    [
        ("epochs", "float32", "npz"),
        ("patience", "float32", "npz"),
        ("loss_tol", "float32", "npz"),
        ("epochs", "bfloat16", "npz"),
        ("patience", "bfloat16", "orbax"),
    ],
)
def test_resume_after_a_killed_process_matches_an_uninterrupted_fit(
    tmp_path, rule, dtype, fmt
):
    path = ckpt(tmp_path, fmt)
    script = KILLED_RUN.format(
        tests=os.path.dirname(__file__), path=path, rule=rule, dtype=dtype, fmt=fmt
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=300
    )
    assert run.returncode == 9, run.stderr.decode()[-2000:]
    full = run_to_be_killed(None, rule, dtype, fmt, die_at=None)
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    kwargs = dict(KW, **STOPPING[rule])
    resumed = jaxfit.fit(
        loss, NOISY_TX, params, noisy_data(), resume_from=path, **kwargs
    )
    assert_same_fit(resumed, full)


@pytest.mark.parametrize(
    "dtype", ["bfloat16", "float16", "float32", "float64", "complex64"]
)
def test_every_params_dtype_round_trips(tmp_path, dtype, fmt):
    with jax.enable_x64(dtype == "float64"):
        params = jax.tree.map(lambda p: (p + 0.5).astype(dtype), PARAMS)
        x, y = make_data(300)

        def any_loss(p, batch, mask):
            r = batch[0] @ p["w"] + p["b"] - batch[1]
            return jaxfit.masked_mean(jnp.abs(r) ** 2, mask).real.astype(jnp.float32)

        kwargs = dict(
            batch_size=64, epochs=2, key=3, chunk_batches=2, progress=False,
            checkpoint_format=fmt,
        )  # fmt: skip
        tx = jaxfit.sgd(1e-3)
        full = jaxfit.fit(any_loss, tx, params, (x, y), **kwargs)
        path = ckpt(tmp_path, fmt)
        interrupt(path, (x, y), (0, 1), params, tx, loss=any_loss, **kwargs)
        resumed = jaxfit.fit(any_loss, tx, params, (x, y), resume_from=path, **kwargs)
    assert jax.tree.leaves(resumed.params)[0].dtype == jnp.dtype(dtype)
    assert_same_fit(resumed, full)


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_resume_with_other_chunks_continues_the_same_stream(tmp_path, shuffle):
    data = make_data(1000)  # 16 batches of 64, the last ragged
    kwargs = dict(KW, shuffle=shuffle)
    full = jaxfit.fit(loss, TX, PARAMS, data, **kwargs)
    path = str(tmp_path / "fit.ckpt")
    interrupt(path, data, (1, 2), **kwargs)
    resumed = jaxfit.fit(
        loss, TX, PARAMS, data, resume_from=path, **dict(kwargs, chunk_batches=5)
    )
    # The same batches in the same order; scans of other lengths may round
    # differently (XLA fuses an unrolled loop per length).
    chex.assert_trees_all_close(resumed.state, full.state, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], 1e-5)
    assert int(resumed.state.count) == int(full.state.count)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(batch_size=32), "batch_size"),
        (dict(key=8), "key"),
        (dict(shuffle=False), "shuffle"),
        (dict(rows=900), "rows"),
        (dict(params={"w2": jnp.zeros(3), "b": jnp.zeros(())}), "params"),
        (dict(tx="rms"), "opt_state"),
    ],
)
def test_a_resume_with_another_stream_or_model_is_refused(tmp_path, change, message):
    import optax

    data = make_data(1000)
    path = str(tmp_path / "fit.ckpt")
    momentum = jaxfit.sgd(0.01, momentum=0.9)  # state: one params-shaped trace
    interrupt(path, data, (0, 0), tx=momentum, **KW)
    change = dict(change)
    rows = change.pop("rows", None)
    if rows is not None:
        data = tuple(a[:rows] for a in data)
    params = change.pop("params", PARAMS)
    # A loss that reads the params by position, so renamed keys would fit.
    by_position = lambda p, batch, mask: loss(
        dict(zip(("b", "w"), jax.tree.leaves(p), strict=True)), batch, mask
    )
    # RMSProp's state has the same layout as momentum's: one params-shaped
    # array (and an empty state), in other classes.
    tx = optax.rmsprop(0.01) if change.pop("tx", None) == "rms" else momentum
    with pytest.raises(ValueError, match=f"`resume_from`.*{message}"):
        jaxfit.fit(
            by_position, tx, params, data, resume_from=path, **dict(KW, **change)
        )


def broken_files(tmp_path):
    good = str(tmp_path / "good.ckpt")
    interrupt(good, make_data(300), (0, 0), **KW)
    raw = open(good, "rb").read()
    corrupt = bytearray(raw)
    corrupt[len(raw) // 2 : len(raw) // 2 + 64] = b"\xff" * 64
    files = {
        "truncated": raw[: len(raw) // 2],
        "corrupt": bytes(corrupt),
        "empty": b"",
        "text": b"epoch,loss\n1,0.5\n",
    }
    paths = []
    for name, content in files.items():
        paths.append(str(tmp_path / f"{name}.ckpt"))
        with open(paths[-1], "wb") as f:
            f.write(content)
    paths.append(str(tmp_path / "pickled.npz"))
    np.savez(paths[-1], meta=np.array([{"a": 1}], dtype=object))
    paths.append(str(tmp_path / "other.npz"))
    np.savez(paths[-1], weights=np.ones(3))
    return paths


def test_a_broken_or_foreign_file_is_one_clear_error(tmp_path):
    for path in broken_files(tmp_path):
        with pytest.raises(ValueError) as error:
            jaxfit.fit(loss, TX, PARAMS, make_data(300), resume_from=path, **KW)
        text = str(error.value)
        assert "`resume_from`" in text and path in text, text
        assert "allow_pickle" not in text


def test_a_write_removes_stale_temporaries_and_follows_the_umask(tmp_path):
    path = str(tmp_path / "fit.ckpt")
    stale = str(tmp_path / ".fit.ckpt.0123abcd.tmp")  # left by a killed write
    open(stale, "wb").close()
    other = str(tmp_path / ".other.ckpt.0123abcd.tmp")  # another checkpoint's
    open(other, "wb").close()
    old = os.umask(0o027)
    try:
        jaxfit.fit(loss, TX, PARAMS, make_data(300), checkpoint_path=path, **KW)
    finally:
        os.umask(old)
    assert not os.path.exists(stale) and os.path.exists(other)
    assert glob.glob(str(tmp_path / ".fit.ckpt.*")) == []
    assert os.stat(path).st_mode & 0o777 == 0o640
