"""The streaming driver: equivalence, memmaps, compile counts, faults, errors."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfit
from tests.conftest import PARAMS, TX, loss, make_data


def dict_loss(params, batch, mask):
    """``loss`` for data given as a dict (an .npz or HDF5 file)."""
    return loss(params, (batch["x"], batch["y"]), mask)


def test_fit_equals_a_python_loop_of_steps():
    x, y = make_data(1000)  # 1000 = 15 batches of 64 + a ragged batch of 40
    result = jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=64,
        epochs=2,
        shuffle=False,
        chunk_batches=4,
        progress=False,
    )
    step = jax.jit(jaxfit.make_step(loss, TX))
    state = jaxfit.init_fit_state(PARAMS, TX)
    for _ in range(2):
        for start in range(0, 1000, 64):
            rows = np.arange(start, min(start + 64, 1000))
            state, _ = step(state, (x[rows], y[rows]), np.ones(len(rows), bool))
    chex.assert_trees_all_close(result.params, state.params, rtol=1e-5, atol=1e-6)
    assert int(result.state.count) == 2 * 16
    assert result.history["loss"].shape == (32,)
    assert result.epochs == 2 and result.stopped == "epochs"


def test_a_loss_without_mask_pads_the_last_chunk_with_batches_that_do_nothing():
    def unmasked(params, batch):
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    x, y = make_data(1024)  # 16 batches of 64: chunks of 5 leave 4 padding ones
    kwargs = dict(batch_size=64, epochs=2, shuffle=False, progress=False)
    result = jaxfit.fit(unmasked, TX, PARAMS, (x, y), chunk_batches=5, **kwargs)
    step = jax.jit(jaxfit.make_step(unmasked, TX))
    state = jaxfit.init_fit_state(PARAMS, TX)
    for _ in range(2):
        for start in range(0, 1024, 64):
            state, _ = step(state, (x[start : start + 64], y[start : start + 64]))
    chex.assert_trees_all_close(result.params, state.params, rtol=1e-5, atol=1e-6)
    assert int(result.state.count) == 32 and result.history["loss"].shape == (32,)
    assert np.isfinite(result.history["loss"]).all()


def test_an_unrolled_scan_takes_the_same_steps():
    x, y = make_data(1000)
    kwargs = dict(batch_size=64, epochs=2, chunk_batches=6, key=2, progress=False)
    plain = jaxfit.fit(loss, TX, PARAMS, (x, y), unroll=1, **kwargs)
    for unroll in (None, 4):  # 4 does not divide the chunk's 6 batches
        unrolled = jaxfit.fit(loss, TX, PARAMS, (x, y), unroll=unroll, **kwargs)
        chex.assert_trees_all_close(unrolled.params, plain.params, rtol=1e-6)
        np.testing.assert_allclose(
            unrolled.history["loss"], plain.history["loss"], rtol=1e-6
        )


def test_small_steps_are_unrolled_by_default_and_large_ones_not():
    from jaxfit.streaming import _signature, _traced_step

    x, y = make_data(64)
    mask = np.ones(64, bool)
    for tx, unroll in ((TX, 4), (jaxfit.lbfgs(), 1)):
        state = jaxfit.init_fit_state(PARAMS, tx)
        assert _traced_step(loss, tx, _signature((state, (x, y), mask))) == unroll


def test_only_a_long_fit_of_small_steps_compiles_an_unrolled_loop(monkeypatch):
    from jaxfit import step, streaming

    built = []
    runner = streaming._compiled_runner
    monkeypatch.setattr(
        streaming,
        "_compiled_runner",
        lambda loss, tx, unroll: built.append(unroll) or runner(loss, tx, unroll),
    )
    x, y = make_data(640)  # 10 batches an epoch
    kwargs = dict(batch_size=64, epochs=3, progress=False)
    jaxfit.fit(loss, TX, PARAMS, (x, y), **kwargs)  # 30 steps: short
    monkeypatch.setattr(step, "_UNROLL_MIN_STEPS", 30)
    jaxfit.fit(loss, TX, PARAMS, (x, y), **kwargs)  # now long enough
    jaxfit.fit(loss, jaxfit.lbfgs(), PARAMS, (x, y), **kwargs)  # a large step
    jaxfit.fit(loss, TX, PARAMS, (x, y), unroll=2, **kwargs)  # the user's
    assert built == [1, 4, 1, 2]


def test_memmap_larger_than_the_budget_equals_in_memory(tmp_path):
    x, y = make_data(6000)
    xm = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, x.shape)
    ym = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.float32, y.shape)
    xm[:], ym[:] = x, y
    xm.flush(), ym.flush()
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    budget = 4 * 100 * 16  # bytes: two chunks of ~2 batches of 100 rows
    kwargs = dict(batch_size=100, epochs=2, key=3, progress=False)
    streamed = jaxfit.fit(loss, TX, PARAMS, (xm, ym), chunk_bytes=budget, **kwargs)
    in_memory = jaxfit.fit(loss, TX, PARAMS, (x, y), chunk_bytes=budget, **kwargs)
    assert x.nbytes + y.nbytes > 10 * budget
    chex.assert_trees_all_equal(streamed.params, in_memory.params)


def test_no_recompilation_across_chunks_epochs_ragged_batch_and_calls(
    count_compilations,
):
    x, y = make_data(1000)
    kwargs = dict(batch_size=64, chunk_batches=3, progress=False)
    jaxfit.fit(loss, TX, PARAMS, (x, y), epochs=1, **kwargs)  # compiles
    with count_compilations() as counter:
        result = jaxfit.fit(loss, TX, PARAMS, (x, y), epochs=3, key=5, **kwargs)
        jaxfit.fit(loss, TX, result.params, make_data(990, seed=1), **kwargs)
    assert counter.count == 0


@pytest.mark.parametrize("kind", ["weak jnp", "python float", "numpy scalar"])
def test_one_fit_compiles_its_chunk_program_once_whatever_the_params_types(
    count_compilations, kind
):
    """The quickstart's set-up (params from jnp.asarray(1.0), weakly typed;
    or Python floats, or NumPy scalars; clip + adam; a ragged last batch;
    several epochs): one compilation of the chunk program, then none for a
    repeated fit."""
    make = {
        "weak jnp": jnp.asarray,
        "python float": float,
        "numpy scalar": np.float32,
    }[kind]
    start = {k: make(v) for k, v in {"amplitude": 1.0, "rate": 0.5}.items()}
    x = np.linspace(0, 4, 3000, dtype=np.float32)
    y = 2.5 * np.exp(-1.3 * x)

    def curve(params, batch, mask):
        model = params["amplitude"] * jnp.exp(-params["rate"] * batch[0])
        return jaxfit.masked_mean((model - batch[1]) ** 2, mask)

    tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(0.02))
    kwargs = dict(batch_size=256, epochs=3, chunk_batches=4, key=0, progress=False)
    with count_compilations() as first:
        result = jaxfit.fit(curve, tx, start, (x, y), **kwargs)
    with count_compilations() as again:
        jaxfit.fit(curve, tx, start, (x, y), **kwargs)
    streaming = jaxfit.streaming
    example = (result.state, (x[:256], y[:256]), np.ones(256, bool))
    unroll = streaming._traced_step(curve, tx, streaming._signature(example))
    if not jaxfit.step.long_fit(3, 12):  # 12 batches an epoch: a short fit
        unroll = 1
    program = streaming._compiled_runner(curve, tx, unroll)
    assert program._cache_size() == 1  # one chunk program, for every epoch
    assert again.count == 0
    assert first.count <= 3  # the chunk program, the initial state, the key


def test_non_finite_batches_are_skipped_and_counted():
    x, y = make_data(640)
    y = y.copy()
    y[100] = np.nan  # poisons batch 1 of 10
    result = jaxfit.fit(
        loss, TX, PARAMS, (x, y), batch_size=64, shuffle=False, progress=False
    )
    assert int(result.state.skipped) == 1
    assert int(result.state.count) == 9
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(result.params))
    assert np.isfinite(result.best_loss)


def test_iterable_of_batches_and_npz_sources(tmp_path):
    x, y = make_data(500)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 500, 64)]
    from_list = jaxfit.fit(
        loss, TX, PARAMS, batches, epochs=2, chunk_batches=3, progress=False
    )
    from_arrays = jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=64,
        epochs=2,
        shuffle=False,
        chunk_batches=3,
        progress=False,
    )
    chex.assert_trees_all_close(from_list.params, from_arrays.params, rtol=1e-6)

    np.savez(tmp_path / "data.npz", x=x, y=y)

    from_npz = jaxfit.fit(
        dict_loss,
        TX,
        PARAMS,
        str(tmp_path / "data.npz"),
        batch_size=64,
        epochs=2,
        shuffle=False,
        chunk_batches=3,
        progress=False,
    )
    chex.assert_trees_all_close(from_npz.params, from_arrays.params, rtol=1e-6)


def test_callback_stops_and_early_stopping():
    x, y = make_data(1000)
    calls = []

    def stop_after_two(info):
        calls.append(info.chunk)
        return len(calls) == 2

    result = jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=50,
        chunk_batches=2,
        epochs=5,
        callback=stop_after_two,
        progress=False,
    )
    assert result.stopped == "callback" and int(result.state.count) == 4
    result = jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=50,
        epochs=100,
        loss_tol=1e-3,
        progress=False,
    )
    assert result.stopped == "loss_tol" and result.epochs < 100


MULTI_DEVICE = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import sys, numpy as np, jax
    sys.path.insert(0, {tests!r})
    from conftest import loss, make_data, PARAMS, TX
    import jaxfit
    assert jax.device_count() == 4
    x, y = make_data(1000)
    mesh = jax.make_mesh((4,), ("batch",))
    kw = dict(batch_size=64, epochs=2, key=2, chunk_batches=3, progress=False)
    sharded = jaxfit.fit(loss, TX, PARAMS, (x, y), mesh=mesh, **kw)
    single = jaxfit.fit(loss, TX, PARAMS, (x, y), **kw)
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("ok", len(jax.tree.leaves(sharded.params)[0].sharding.device_set))
    """
)


def test_mesh_over_four_cpu_devices_equals_one_device():
    script = MULTI_DEVICE.format(tests=os.path.dirname(__file__))
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok 4"


def test_two_processes_each_streaming_their_own_rows_equal_one_process():
    # jax.distributed over two CPU processes (Gloo), 2 devices each: each
    # passes its own rows and batch_size; the global step sees both halves.
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    script = os.path.join(os.path.dirname(__file__), "_multi_host_fit.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(pid), str(port), os.path.dirname(__file__)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for pid, (proc, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == f"ok {pid} 2 4"


@pytest.mark.parametrize(
    "data,kwargs,message",
    [
        ((np.ones((10, 2)), np.ones(9)), dict(batch_size=2), "same number of rows"),
        ((np.ones((10, 2)), np.ones(10)), dict(batch_size=0), "`batch_size`"),
        ((np.ones((10, 2)), np.ones(10)), dict(batch_size=11), "larger than the data"),
        ((np.ones((0, 2)), np.ones(0)), dict(batch_size=1), "empty"),
        ([], dict(batch_size=1), "empty"),
        ((np.array(["a", "b"]), np.ones(2)), dict(batch_size=1), "dtype"),
        ((np.ones((10, 3)), np.ones(10)), dict(batch_size=2, epochs=0), "`epochs`"),
        ((np.ones((10, 3)), np.ones(10)), dict(batch_size=2, unroll=0), "`unroll`"),
        (iter([(np.ones((2, 3)), np.ones(2))]), dict(epochs=2), "one-shot"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_work(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jaxfit.fit(loss, TX, PARAMS, data, progress=False, **kwargs)


NAN_PARAMS = {"w": jnp.array([0.0, jnp.nan, 0.0]), "b": jnp.zeros(())}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(params=NAN_PARAMS), "`params` contains NaN"),
        (dict(params="weights"), "`params`"),
        (dict(params={}), "`params`"),
        (dict(shuffle=1), "`shuffle`"),
        (dict(shuffle="yes"), "`shuffle`"),
        (dict(callback="print"), "`callback`"),
        (dict(loss_tol="0.1"), "`loss_tol`"),
        (dict(patience=2.5), "`patience`"),
        (dict(tx=jaxfit.adam), "`tx`.*factory"),
        (dict(tx=None), "`tx`"),
        (dict(tx="adam"), "`tx`"),
        (dict(key="seed"), "`key`"),
        (dict(key=1.5), "`key`"),
        (dict(mesh="batch"), "`mesh`"),
        (dict(data="list"), "`data`.*tuple"),
        (dict(checkpoint_path="/no/such/directory/fit.ckpt"), "`checkpoint_path`"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs, message, monkeypatch):
    """Each bad argument is named, and nothing is compiled or run first."""
    x, y = make_data(100)
    args = dict(loss=loss, tx=TX, params=PARAMS, data=(x, y)) | kwargs
    if kwargs.get("data") == "list":
        args["data"] = [x, y]  # arrays in a list: not an iterable of batches
    monkeypatch.setattr(
        jaxfit.streaming,
        "_compiled_runner",
        lambda *a: pytest.fail("work was done before the check"),
    )
    with pytest.raises(ValueError, match=message):
        jaxfit.fit(**args, batch_size=10, progress=False)


def test_an_unwritable_checkpoint_directory_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # root may write anywhere: the directory is made unwritable for the check
    # itself, as it is for any other user.
    access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: (
            False if os.fspath(path) == str(locked) else access(path, mode, **kw)
        ),
    )
    with pytest.raises(ValueError, match=r"`checkpoint_path`.*not writable"):
        jaxfit.fit(
            loss,
            TX,
            PARAMS,
            make_data(100),
            batch_size=10,
            progress=False,
            checkpoint_path=str(locked / "fit.ckpt"),
        )


def test_a_loss_returning_a_vector_or_lacking_a_mask_is_rejected():
    x, y = make_data(100)

    def vector_loss(params, batch, mask):
        return batch[0] @ params["w"]

    with pytest.raises(ValueError, match="must return a scalar"):
        jaxfit.fit(vector_loss, TX, PARAMS, (x, y), batch_size=10, progress=False)

    def no_mask(params, batch):
        return jnp.mean(batch[0] @ params["w"])

    with pytest.raises(ValueError, match="takes no `mask`"):
        jaxfit.fit(no_mask, TX, PARAMS, (x, y), batch_size=30, progress=False)
    jaxfit.fit(no_mask, TX, PARAMS, (x, y), batch_size=25, progress=False)  # divides


def test_hdf5_source_and_progress_bar(tmp_path, capsys):
    import h5py

    x, y = make_data(500)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"], f["y"] = x, y

    kwargs = dict(batch_size=64, epochs=2, key=4, chunk_batches=3)
    from_h5 = jaxfit.fit(dict_loss, TX, PARAMS, str(tmp_path / "data.h5"), **kwargs)
    from_arrays = jaxfit.fit(
        dict_loss, TX, PARAMS, {"x": x, "y": y}, progress=False, **kwargs
    )
    chex.assert_trees_all_equal(from_h5.params, from_arrays.params)
    assert "loss=" in capsys.readouterr().err  # the tqdm bar with the loss


def test_callback_metrics_hold_only_the_real_steps_of_a_chunk():
    x, y = make_data(1000)  # 16 batches of 64 (the last ragged), chunks of 3
    lengths = []

    def callback(info):
        lengths.append(len(info.metrics["loss"]))
        assert np.all(np.isfinite(info.metrics["loss"]))

    jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=64,
        chunk_batches=3,
        shuffle=False,
        progress=False,
        callback=callback,
    )
    assert lengths == [3, 3, 3, 3, 3, 1]


def test_an_unhashable_callable_loss_fits_as_a_function_does():
    """``jax.jit`` accepts a dataclass instance with ``__call__`` (eq=True
    makes it unhashable); so does ``fit``, with the same result."""

    @dataclasses.dataclass
    class Loss:
        scale: float

        def __call__(self, params, batch, mask):
            return self.scale * loss(params, batch, mask)

    data = make_data(200)
    kwargs = dict(batch_size=64, epochs=2, progress=False)
    as_object = jaxfit.fit(Loss(1.0), TX, PARAMS, data, **kwargs)
    as_function = jaxfit.fit(loss, TX, PARAMS, data, **kwargs)
    chex.assert_trees_all_close(as_object.params, as_function.params)


def test_a_dropped_loss_and_what_it_closes_over_are_freed():
    """No cache of jaxfit's keeps a user's loss alive: 20 fits whose loss
    closes over a 40 MB array grow the RSS by less than 100 MB more than 20
    plain ``jax.jit`` calls of that loss do (a cache holding them: 1.1 GB;
    JAX 0.10 frees the jit's too, JAX 0.12 keeps a jitted closure's
    constants in its own caches), and each loss itself is collected."""
    code = textwrap.dedent(
        """
        import gc, weakref
        import jax, jax.numpy as jnp, numpy as np, jaxfit

        def rss_mb():
            with open("/proc/self/status") as f:
                line = next(s for s in f if s.startswith("VmRSS"))
            return int(line.split()[1]) / 1024

        x = np.linspace(0, 1, 256, dtype=np.float32)
        data, tx = (x, 2 * x), jaxfit.adam(0.1)

        def one(use_fit):
            big = jnp.asarray(np.random.rand(10_000_000).astype(np.float32))
            def loss(p, b):
                return jnp.mean((p * b[0] - b[1]) ** 2) + 0 * big[0]
            if use_fit:
                jaxfit.fit(loss, tx, jnp.zeros(()), data, batch_size=64,
                           progress=False)
            else:
                jax.jit(jax.value_and_grad(loss))(jnp.zeros(()), data)
            return weakref.ref(loss)

        growth = []
        for use_fit in (False, True):
            one(use_fit); gc.collect()
            start = rss_mb()
            refs = [one(use_fit) for _ in range(20)]
            gc.collect()
            growth.append(rss_mb() - start)
        print(sum(r() is not None for r in refs), *growth)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    alive, jit_growth, fit_growth = out.stdout.split()
    assert int(alive) == 0
    assert float(fit_growth) < float(jit_growth) + 100, (fit_growth, jit_growth)


@pytest.mark.parametrize("seed", [0, 7, 2**31 - 1, -5, 2**40])
def test_an_int_seed_is_seeded_inside_the_initial_state_program_as_raw_key(seed):
    from jaxfit import streaming

    state, finite = streaming._initial_state(TX)(PARAMS, streaming._key_arg(seed))
    np.testing.assert_array_equal(state.key, jaxfit.step.raw_key(seed))
    assert bool(finite)
