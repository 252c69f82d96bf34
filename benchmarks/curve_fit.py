"""jaxfit.curve_fit vs scipy.optimize.curve_fit (lm, trf), side by side.

Per size and model: the first call (compilation included; each size is a new
padding bucket, so it compiles) and the median repeat call, plus a batch of
independent 100-point fits (jaxfit vmapped vs a SciPy loop), repeat calls
at small sizes beside the floor (a minimal jitted LM loop), the first call
of a new process at 1e6 points with JAX's persistent compilation cache empty
and warm, and the peak memory of one fit at the largest size (each in a
fresh subprocess, maxrss).

    python benchmarks/curve_fit.py [--quick]   # = run.py --only curve_fit
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

_HERE = str(Path(__file__).resolve().parent)

MODELS = {
    # 3 parameters: decaying exponential with offset.
    "3p": ([2.5, 1.3, 0.5], [1.0, 1.0, 0.0]),
    # 8 parameters: two Gaussian peaks on a linear background.
    "8p": (
        [3.0, 2.0, 0.5, 2.0, 6.0, 0.8, 0.3, 0.05],
        [2.5, 2.2, 0.6, 1.5, 5.8, 1.0, 0.2, 0.0],
    ),
}


def model(xp, name):
    if name == "3p":
        return lambda x, a, k, c: a * xp.exp(-k * x) + c

    def two_peaks(x, a1, m1, s1, a2, m2, s2, c0, c1):
        g1 = a1 * xp.exp(-0.5 * ((x - m1) / s1) ** 2)
        g2 = a2 * xp.exp(-0.5 * ((x - m2) / s2) ** 2)
        return g1 + g2 + c0 + c1 * x

    return two_peaks


def data(name, m, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 8, m)
    true, _ = MODELS[name]
    return x, model(np, name)(x, *true) + 0.05 * rng.normal(size=m)


def _timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)) if times else first, out


# JAX's compile-stage events: where a first call's time goes.
_STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "xla_compile",
}
_STAGE_NAMES = tuple(_STAGES.values())
_stage_seconds: dict[str, float] | None = None


def _on_stage(event: str, duration: float, **kwargs) -> None:
    if _stage_seconds is not None and event in _STAGES:
        name = _STAGES[event]
        _stage_seconds[name] = _stage_seconds.get(name, 0.0) + duration


def _first_call_stages(fn):
    """Runs ``fn`` and returns the seconds JAX spent tracing, lowering and
    compiling in it, by stage."""
    import jax.monitoring

    global _stage_seconds
    if not getattr(_first_call_stages, "registered", False):
        jax.monitoring.register_event_duration_secs_listener(_on_stage)
        _first_call_stages.registered = True
    _stage_seconds = {}
    try:
        fn()
        return dict(_stage_seconds)
    finally:
        _stage_seconds = None


def one_size(name, m, repeats):
    import jax.numpy as jnp
    import scipy.optimize as so

    import jaxfit

    x, y = data(name, m)
    _, p0 = MODELS[name]
    fj, fn = model(jnp, name), model(np, name)
    row = {"model": name, "m": m}
    fit = lambda: jaxfit.curve_fit(fj, x, y, p0=p0)[0]
    first, rep, popt = _timed(fit, repeats)
    row["jaxfit_first"], row["jaxfit_repeat"] = first, rep
    # The stages of a first call, on a fresh model function: a new cache
    # key, so the same program is traced, lowered and compiled again.
    fresh = model(jnp, name)
    row["first_call_stages"] = _first_call_stages(
        lambda: jaxfit.curve_fit(fresh, x, y, p0=p0)
    )
    for method in ("lm", "trf"):
        first, rep, ref = _timed(
            lambda method=method: so.curve_fit(fn, x, y, p0=p0, method=method)[0],
            repeats,
        )
        row[f"scipy_{method}"] = rep
        row[f"max_rel_diff_{method}"] = float(np.max(np.abs(popt - ref) / np.abs(ref)))
    return row


def batch(n_fits, repeats):
    import jax
    import jax.numpy as jnp
    import scipy.optimize as so

    import jaxfit

    rng = np.random.default_rng(1)
    x = np.linspace(0, 5, 100)
    f = model(jnp, "3p")
    true = np.stack(
        [
            rng.uniform(1, 4, n_fits),
            rng.uniform(0.3, 2, n_fits),
            rng.normal(size=n_fits),
        ],
        1,
    )
    ys = (
        true[:, :1] * np.exp(-true[:, 1:2] * x)
        + true[:, 2:]
        + 0.01 * rng.normal(size=(n_fits, 100))
    )
    residual = jaxfit.model_residual(f)

    @jax.jit
    @jax.vmap
    def solve(y):
        return jaxfit.least_squares_solve(
            residual, jnp.ones(3), jaxfit.make_batch(x, y)
        ).params

    def run_vmap():
        with jax.enable_x64(True):
            return np.asarray(solve(ys))

    def solve_many():  # the same solver, compacting the running fits in rounds
        with jax.enable_x64(True):
            return jaxfit.least_squares_solve_many(
                residual, np.ones((n_fits, 3)), {"y": ys}, shared={"x": x}
            )

    def run_many():
        sol = solve_many()
        return np.asarray(sol.params), np.asarray(sol.iterations)

    first, jax_time, (params, iterations) = _timed(run_many, repeats)
    vmap_first, vmap_time, vmap_params = _timed(run_vmap, repeats)
    iterations = float(np.mean(iterations))
    floor = minimal_batched_lm(x, ys, round(iterations), repeats)
    fn = model(np, "3p")
    n_scipy = min(n_fits, 500)  # extrapolated per fit: a full loop takes minutes
    t0 = time.perf_counter()
    ref, failures = [], 0
    for i in range(n_scipy):
        try:
            ref.append(so.curve_fit(fn, x, ys[i], p0=[1, 1, 1])[0])
        except RuntimeError:  # SciPy did not converge within maxfev
            ref.append(np.full(3, np.nan))
            failures += 1
    ref = np.stack(ref)
    scipy_time = (time.perf_counter() - t0) / n_scipy * n_fits
    diff = float(np.nanmax(np.abs(params[:n_scipy] - ref)))
    return {
        "n_fits": n_fits,
        "jaxfit_first": first,
        "jaxfit_repeat": jax_time,
        "vmap_first": vmap_first,
        "vmap_repeat": vmap_time,
        "vmap_max_abs_diff": float(np.nanmax(np.abs(vmap_params - params))),
        "scipy_loop": scipy_time,
        "scipy_fits_timed": n_scipy,
        "speedup": scipy_time / jax_time,
        "mean_iterations": iterations,
        "minimal_lm": floor,
        "minimal_lm_speedup": scipy_time / floor,
        "max_abs_diff": diff,
        "scipy_failures": failures,
    }


def minimal_batched_lm(x, ys, iterations, repeats):
    """The floor of any batched LM here: seconds for ``iterations`` steps of a
    hand-written LM for ``a exp(-k x) + c`` over all fits at once.

    Everything is elementwise over a leading axis of fits (closed-form
    Jacobian, 3x3 solve by cofactors, no stopping tests, no state beyond
    the damping), run for a fixed number of iterations: jaxfit's mean. It
    is not a usable solver (fits that need more iterations are left
    unfinished); it bounds what XLA on this machine can do for the batch.
    """
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        X, Y = jnp.asarray(x), jnp.asarray(ys)

        @jax.jit
        def solve(Y):
            def residual(p):
                a, k, c = p[:, :1], p[:, 1:2], p[:, 2:]
                e = jnp.exp(-k * X)
                return a * e + c - Y, (e, -a * X * e, jnp.ones_like(e))

            def body(_, carry):
                p, lam = carry
                r, J = residual(p)
                A = [[jnp.sum(J[i] * J[j], 1) for j in range(3)] for i in range(3)]
                g = [jnp.sum(J[i] * r, 1) for i in range(3)]
                for i in range(3):
                    A[i][i] = A[i][i] * (1 + lam)
                cof = [
                    [
                        A[(j + 1) % 3][(i + 1) % 3] * A[(j + 2) % 3][(i + 2) % 3]
                        - A[(j + 1) % 3][(i + 2) % 3] * A[(j + 2) % 3][(i + 1) % 3]
                        for j in range(3)
                    ]
                    for i in range(3)
                ]
                det = sum(A[0][j] * cof[j][0] for j in range(3))
                step = jnp.stack(
                    [-sum(cof[i][j] * g[j] for j in range(3)) / det for i in range(3)],
                    1,
                )
                better = jnp.sum(residual(p + step)[0] ** 2, 1) < jnp.sum(r**2, 1)
                p = jnp.where(better[:, None], p + step, p)
                return p, jnp.where(better, lam / 3, lam * 2)

            start = (jnp.ones((Y.shape[0], 3)), jnp.full(Y.shape[0], 1e-3))
            return jax.lax.fori_loop(0, iterations, body, start)[0]

        _, seconds, _ = _timed(lambda: solve(Y).block_until_ready(), repeats)
    return seconds


_PEAK_CHILD = """
import resource, sys
import numpy as np

which, name, m = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.linspace(0, 8, m)
if name == "3p":
    true, p0 = [2.5, 1.3, 0.5], [1.0, 1.0, 0.0]
else:
    true = [3.0, 2.0, 0.5, 2.0, 6.0, 0.8, 0.3, 0.05]
    p0 = [2.5, 2.2, 0.6, 1.5, 5.8, 1.0, 0.2, 0.0]
if which == "jaxfit":
    import jax.numpy as xp
    import jaxfit
    fit = lambda f: jaxfit.curve_fit(f, x, y, p0=p0)
else:
    import scipy.optimize as so
    xp = np
    fit = lambda f: so.curve_fit(f, x, y, p0=p0, method=which)
def f(x, *p):
    if len(p) == 3:
        return p[0] * xp.exp(-p[1] * x) + p[2]
    a1, m1, s1, a2, m2, s2, c0, c1 = p
    g1 = a1 * xp.exp(-0.5 * ((x - m1) / s1) ** 2)
    g2 = a2 * xp.exp(-0.5 * ((x - m2) / s2) ** 2)
    return g1 + g2 + c0 + c1 * x
# The data in chunks, so that making it leaves no high-water mark above the
# baseline (the fit's peak must exceed the baseline to be seen).
y = np.empty(m)
for i in range(0, m, 1 << 16):
    xs = x[i : i + (1 << 16)]
    y[i : i + xs.size] = f(xs, *true) if which != "jaxfit" else np.asarray(f(xs, *true))
y += 0.05 * np.random.default_rng(0).normal(size=m)
def peak_kib():
    # Linux: this process's own high-water mark. ru_maxrss is not usable
    # there: a child inherits its parent's maxrss across fork and exec.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:  # Linux: reset the high-water mark to the current RSS
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
except OSError:
    pass
base = peak_kib()
fit(f)
print(base / 1024, (peak_kib() - base) / 1024)
"""


def peak_memory(which, name, m):
    """Peak RSS of one fit above the baseline, in a fresh child process.

    The child imports only what ``which`` needs (jax + jaxfit, or SciPy) and
    makes its own data; the baseline is its peak RSS after that, so the
    figure is what the fit itself adds (compilation included for jaxfit).
    Returns ``(baseline_mib, fit_peak_mib)`` or None if the child failed.
    """
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, which, name, str(m)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        print(f"peak memory ({which}) failed:", out.stderr[-2000:], file=sys.stderr)
        return None
    base, peak = map(float, out.stdout.split())
    return {"baseline_mib": base, "fit_peak_mib": peak}


_FIRST_CALL_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[3])
from curve_fit import MODELS, data, model
import jax.numpy as jnp
import jaxfit
x, y = data(sys.argv[1], int(sys.argv[2]))
f = model(jnp, sys.argv[1])
start = time.perf_counter()
jaxfit.curve_fit(f, x, y, p0=MODELS[sys.argv[1]][1])
print(time.perf_counter() - start)
"""


def first_call_in_new_processes(name, m):
    """The first ``curve_fit`` call of a fresh process, twice, sharing one
    JAX persistent compilation cache (opt-in, see docs/curve_fit.md): the
    first process compiles and fills it, the second loads the program.
    Returns ``{"cold_s", "warm_s"}`` or None if a child failed."""
    times = []
    with tempfile.TemporaryDirectory() as cache:
        env = {
            **os.environ,
            "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL_CHILD, name, str(m), _HERE],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode != 0:
                print("first call child failed:", out.stderr[-2000:], file=sys.stderr)
                return None
            times.append(float(out.stdout.split()[-1]))
    return {"cold_s": times[0], "warm_s": times[1]}


# Repeat calls against SciPy lm: at most 1x from 100 to 1e5 points and
# 0.25x at 1e6 (a repeat call reuses the compiled program).
REPEAT_TARGETS = {10**2: 1.0, 10**3: 1.0, 10**4: 1.0, 10**5: 1.0, 10**6: 0.25}
# Calls per case and round at each small size: ~0.1-0.3 s of SciPy each.
_CALLS = {10**2: 400, 10**3: 200, 10**4: 40, 10**5: 8}


def repeat_calls(sizes, rounds):
    """Repeat calls of the 3p fit at small sizes, where per-call overheads
    decide: ``curve_fit``, SciPy ``lm`` and the floor (the minimal jitted
    LM loop of ``time_to_result.minimal_lm``: no argument checks, status or
    covariance), each the median of ``_CALLS[m]`` calls in interleaved
    rounds; ratios are medians of the per-round ratios."""
    import jax
    import jax.numpy as jnp
    import scipy.optimize as so
    from time_to_result import minimal_lm

    import jaxfit

    _, p0 = MODELS["3p"]
    fj, fn = model(jnp, "3p"), model(np, "3p")
    floor = minimal_lm(lambda p, b: fj(b[0], *p) - b[1])

    def floor_call(x, y):
        with jax.enable_x64(True):
            return jax.device_get(floor(np.asarray(p0), x, y))

    def calls(x, y):
        return {
            "jaxfit": lambda: jaxfit.curve_fit(fj, x, y, p0=p0),
            "scipy lm": lambda: so.curve_fit(fn, x, y, p0=p0),
            "minimal LM": lambda: floor_call(x, y),
        }

    records = []
    for m in sizes:
        cases = calls(*data("3p", m))
        times = {name: [] for name in cases}
        for _ in range(rounds + 1):  # the first round warms up (compiles)
            for name, call in cases.items():
                times[name].append(_timed(call, _CALLS[m])[1])
        times = {name: t[1:] for name, t in times.items()}
        records.append(
            {
                "m": m,
                "seconds": {k: _harness.spread(v) for k, v in times.items()},
                "jaxfit / lm": _harness.paired_ratio(
                    times["jaxfit"], times["scipy lm"]
                ),
                "floor / lm": _harness.paired_ratio(
                    times["minimal LM"], times["scipy lm"]
                ),
            }
        )
        print(
            f"  repeat calls, {m:.0e} points: jaxfit / lm "
            f"{records[-1]['jaxfit / lm']['median']:.3g}, floor / lm "
            f"{records[-1]['floor / lm']['median']:.3g}",
            file=sys.stderr,
            flush=True,
        )
    return records


CONFIGS = {
    "full": {
        "sizes": [10**3, 10**5, 10**6, 10**7],
        "repeats": 3,
        "n_fits": 10_000,
        "small": [10**2, 10**3, 10**4, 10**5],
        "rounds": 7,
    },
    "quick": {
        "sizes": [10**3, 10**5, 10**6],
        "repeats": 2,
        "n_fits": 1000,
        "small": [10**2, 10**3, 10**4],
        "rounds": 3,
    },
}
CONFIGS["smoke"] = CONFIGS["quick"]


def run_benchmark(config) -> dict:
    sizes, repeats = config["sizes"], config["repeats"]
    rows = [one_size(name, m, repeats) for name in MODELS for m in sizes]
    for r in rows:
        if r["m"] == 10**6:
            r["new_process"] = first_call_in_new_processes(r["model"], r["m"])
    b = batch(config["n_fits"], repeats)
    memory = {w: peak_memory(w, "8p", sizes[-1]) for w in ("jaxfit", "lm", "trf")}
    small = repeat_calls(config["small"], config["rounds"])
    return {"sizes": rows, "batch": b, "peak_rss_mib": memory, "repeat_calls": small}


def report(results) -> str:
    """The tables and lines printed after a run."""
    rows, b, memory = results["sizes"], results["batch"], results["peak_rss_mib"]
    big = max(r["m"] for r in rows)
    ms = _harness.format_seconds
    sizes = _harness.markdown_table(
        [
            "model", "points", "jaxfit first", "jaxfit repeat", "scipy lm",
            "scipy trf", "repeat / lm", "first / lm", "max rel diff (lm)",
        ],
        [
            [
                r["model"],
                f"{r['m']:.0e}",
                ms(r["jaxfit_first"]),
                ms(r["jaxfit_repeat"]),
                ms(r["scipy_lm"]),
                ms(r["scipy_trf"]),
                f"{r['jaxfit_repeat'] / r['scipy_lm']:.2f}",
                f"{r['jaxfit_first'] / r['scipy_lm']:.2f}",
                f"{r['max_rel_diff_lm']:.1e}",
            ]
            for r in rows
        ],
    )  # fmt: skip
    stages = _harness.markdown_table(
        ["model", "points", "trace", "lower", "XLA compile", "compile / lm"],
        [
            [
                r["model"],
                f"{r['m']:.0e}",
                *(ms(r["first_call_stages"].get(k, 0.0)) for k in _STAGE_NAMES),
                f"{r['first_call_stages'].get('xla_compile', 0) / r['scipy_lm']:.2f}",
            ]
            for r in rows
        ],
    )
    new_process = _harness.markdown_table(
        ["model", "cold", "warm", "scipy lm", "cold / lm", "warm / lm"],
        [
            [
                r["model"],
                ms(p["cold_s"]),
                ms(p["warm_s"]),
                ms(r["scipy_lm"]),
                f"{p['cold_s'] / r['scipy_lm']:.2f}",
                f"{p['warm_s'] / r['scipy_lm']:.2f}",
            ]
            for r in rows
            if (p := r.get("new_process"))
        ],
    )
    peaks = _harness.markdown_table(
        ["solver", "baseline (MiB)", "fit peak above baseline (MiB)"],
        [
            [w, f"{v['baseline_mib']:.0f}", f"{v['fit_peak_mib']:.0f}"]
            for w, v in memory.items()
            if v is not None
        ],
    )
    small = _harness.markdown_table(
        ["points", "jaxfit", "scipy lm", "minimal LM", "jaxfit / lm", "floor / lm"],
        [
            [
                f"{r['m']:.0e}",
                *(ms(r["seconds"][k]["median"]) for k in ("jaxfit", "scipy lm")),
                ms(r["seconds"]["minimal LM"]["median"]),
                _harness.format_ratio(r["jaxfit / lm"]),
                _harness.format_ratio(r["floor / lm"]),
            ]
            for r in results.get("repeat_calls", [])
        ],
    )
    return (
        f"repeat calls of the 3p fit, with the floor (a minimal jitted LM "
        f"loop):\n{small}\n\n"
        f"{sizes}\n\nwhere a first call's time goes (JAX's compile events):\n"
        f"{stages}\n\nfirst call in a new process, 1e6 points (persistent "
        f"cache: cold, warm):\n{new_process}\n"
        f"\nbatch of {b['n_fits']} 100-point fits: "
        f"jaxfit least_squares_solve_many {ms(b['jaxfit_repeat'])}"
        f" (first {ms(b['jaxfit_first'])}), plain vmap {ms(b['vmap_repeat'])}"
        f" (first {ms(b['vmap_first'])}), SciPy loop {ms(b['scipy_loop'])}"
        f" (from {b['scipy_fits_timed']} fits): {b['speedup']:.0f}x;"
        f" max |diff| {b['max_abs_diff']:.1e}; SciPy failures {b['scipy_failures']}"
        f"\nthe floor: a minimal hand-written batched LM, {b['mean_iterations']:.1f}"
        f" iterations (jaxfit's mean), {ms(b['minimal_lm'])}:"
        f" {b['minimal_lm_speedup']:.0f}x the SciPy loop\n"
        f"\npeak RSS of one fit above its baseline, 8p model, {big:.0e} points:\n"
        f"{peaks}"
    )


def plot(document: dict, path) -> Path:
    """jaxfit / SciPy time per size (repeat and first call, log axis) for
    each model, and the batch and memory ratios; red ticks: the targets."""
    rows = document["sizes"]
    plt = _harness.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.6), sharey=True)
    for ax, name in zip(axes[:2], MODELS, strict=True):
        chosen = [r for r in rows if r["model"] == name]
        _harness.draw_bars(
            ax,
            {
                "repeat call / scipy lm": [
                    r["jaxfit_repeat"] / r["scipy_lm"] for r in chosen
                ],
                "first call / scipy lm": [
                    r["jaxfit_first"] / r["scipy_lm"] for r in chosen
                ],
            },
            [f"{r['m']:.0e}" for r in chosen],
            targets={
                "repeat call / scipy lm": [REPEAT_TARGETS.get(r["m"]) for r in chosen],
                "first call / scipy lm": [
                    2.0 if r["m"] >= 10**6 else None for r in chosen
                ],
            },
            lines={"same as scipy lm": 1.0},
            log=True,
        )
        ax.set_title(f"{name} model: jaxfit.curve_fit time / SciPy's")
        ax.set_xlabel("points")
    axes[0].set_ylabel("time ratio (lower is better)")
    b, memory = document["batch"], document.get("peak_rss_mib") or {}
    labels, values, targets = [], [], []
    if b:
        labels += [f"{b['n_fits']} fits\n/ SciPy loop", "floor: minimal\nLM / SciPy"]
        values += [
            b["jaxfit_repeat"] / b["scipy_loop"],
            b["minimal_lm"] / b["scipy_loop"],
        ]
        targets += [0.01, None]
    for other in ("lm", "trf"):
        if memory.get("jaxfit") and memory.get(other):
            labels.append(f"peak RSS\n/ scipy {other}")
            values.append(
                memory["jaxfit"]["fit_peak_mib"] / memory[other]["fit_peak_mib"]
            )
            targets.append(1.0)
    _harness.draw_bars(
        axes[2],
        {"jaxfit / SciPy": values},
        labels,
        targets={"jaxfit / SciPy": targets},
        lines={"same as SciPy": 1.0},
        log=True,
    )
    size = max(r["m"] for r in rows)
    axes[2].set_title(
        f"100-point fits batched; memory of one 8p fit, {size:.0e} points"
    )
    small = document.get("repeat_calls", [])
    _harness.draw_bars(
        axes[3],
        {
            "jaxfit": [r["jaxfit / lm"]["median"] for r in small],
            "floor: minimal LM": [r["floor / lm"]["median"] for r in small],
        },
        [f"{r['m']:.0e}" for r in small],
        targets={"jaxfit": [REPEAT_TARGETS.get(r["m"]) for r in small]},
        lines={"same as scipy lm": 1.0},
        log=True,
    )
    axes[3].set_title("3p model, repeat calls / scipy lm")
    axes[3].set_xlabel("points")
    fig.suptitle("jaxfit.curve_fit vs scipy.optimize.curve_fit (red ticks: targets)")
    return _harness.save_figure(fig, path)


# ----------------------------------------------------------------------------
# Entry points for benchmarks/run.py.


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table, with the issue's targets."""
    row = _harness.headline_row
    rows = []
    for r in document.get("repeat_calls", []):
        case = f"3p model, {r['m']:.0e} points, repeat call"
        target = REPEAT_TARGETS.get(r["m"])
        rows.append(row(case, "scipy lm", r["jaxfit / lm"], target=target))
        rows.append(
            row(
                f"{case}, the floor: a minimal jitted LM loop",
                "scipy lm",
                r["floor / lm"],
                measured="minimal LM",
            )
        )
    for r in document.get("sizes", []):
        if r["m"] < 10**6:
            continue
        case = f"{r['model']} model, {r['m']:.0e} points"
        target = REPEAT_TARGETS.get(r["m"])
        rows.append(
            row(
                f"{case}, repeat call",
                "scipy lm",
                r["jaxfit_repeat"] / r["scipy_lm"],
                target=target,
            )
        )
        rows.append(
            row(
                f"{case}, first call (compile)",
                "scipy lm",
                r["jaxfit_first"] / r["scipy_lm"],
                target=2.0,
            )
        )
        compile_s = r.get("first_call_stages", {}).get("xla_compile")
        if compile_s is not None and r["m"] == 10**6:
            rows.append(
                row(
                    f"{case}, XLA compile of a first call alone",
                    "scipy lm",
                    compile_s / r["scipy_lm"],
                    measured="XLA compile",
                )
            )
        if p := r.get("new_process"):
            for kind, label in (("cold", "empty"), ("warm", "warm")):
                rows.append(
                    row(
                        f"{case}, first call of a new process, {label} "
                        "persistent cache",
                        "scipy lm",
                        p[f"{kind}_s"] / r["scipy_lm"],
                    )
                )
    b = document.get("batch")
    if b:
        rows.append(
            row(
                f"{b['n_fits']} vmapped 100-point fits",
                "SciPy loop",
                b["jaxfit_repeat"] / b["scipy_loop"],
                target=0.01,
            )
        )
        if "minimal_lm" in b:
            rows.append(
                row(
                    f"{b['n_fits']} 100-point fits, the floor: "
                    f"{b['mean_iterations']:.1f} iterations of a minimal "
                    "hand-written batched LM",
                    "SciPy loop",
                    b["minimal_lm"] / b["scipy_loop"],
                    measured="minimal LM",
                )
            )
    memory = document.get("peak_rss_mib") or {}
    size = max((r["m"] for r in document.get("sizes", [])), default=0)
    for other in ("lm", "trf"):
        if memory.get("jaxfit") and memory.get(other):
            rows.append(
                row(
                    f"peak memory of one 8p fit, {size:.0e} points",
                    f"scipy {other}",
                    memory["jaxfit"]["fit_peak_mib"] / memory[other]["fit_peak_mib"],
                    metric="peak RSS",
                    target=1.0,
                )
            )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows ("smoke" is "quick")."""
    config = CONFIGS[mode]
    results = run_benchmark(config)
    print(report(results))
    json_path = _harness.results_path("curve_fit", "json", tag=_harness.tag_of(mode))
    _harness.write_json(json_path, {**results, "mode": mode, "config": config})
    plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
    return _harness.collect("curve_fit", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/curve_fit.py [--quick]``: see run.py."""
    return _harness.main("curve_fit", argv)


if __name__ == "__main__":
    sys.exit(main())
