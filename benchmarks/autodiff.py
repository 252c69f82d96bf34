"""Why autodiff replaces finite differences, and when forward mode beats reverse.

Two measurements, in one process, in float64 (a scoped ``jax.enable_x64``):

**(a) The gradient of a least-squares loss** ``0.5 * |f(p, x) - y|^2`` over
``m`` points, at ``n`` = 5, 10, 50 and 100 parameters. The model is a sum of
``n // 2`` decaying exponentials ``sum_j a_j exp(-k_j x)`` (plus an offset
when ``n`` is odd), nonlinear in every rate, so one evaluation costs
``O(m n)``. Three ways to get the gradient at the same point:

* ``jax.grad``: reverse-mode autodiff of the loss, jitted (what jaxfit does);
* ``FD (jitted)``: 2-point forward differences as SciPy takes them
  (``scipy.optimize._numdiff.approx_derivative``'s default step
  ``sqrt(eps) * max(1, |p_i|)``, rounded so that ``(p + h) - p == h``):
  ``n + 1`` evaluations of the *same jitted loss*, all in one compiled call
  (a ``lax.map`` over the parameters), so the comparison is of the methods,
  not of NumPy against XLA or of Python dispatch;
* ``approx_fprime (NumPy)``: ``scipy.optimize.approx_fprime`` on the same
  loss written in NumPy, with its default absolute step ``sqrt(eps)``: what
  a SciPy user gets today.

Accuracy is the largest relative error over the components,
``max_i |g_i - g*_i| / |g*_i|``, against the exact gradient ``g*`` from
the closed-form derivatives of the model (written out in NumPy, independent
of JAX's autodiff), at a point away from the minimum so that no component is
near zero.

**(b) A full residual Jacobian**, ``jax.jacfwd`` vs ``jax.jacrev``, jitted,
for a *tall* problem (many residuals, few parameters: the exponentials with
``n = 5``) and a *wide* one (``m = 50`` residuals of ``A tanh(p) + 0.1
sum(p)^2 / n - b`` with a dense random ``A``, ``n`` large). Forward mode
pushes ``n`` tangents through the model, reverse mode pulls back ``m``
cotangents (an ``m x m`` identity, so the tall case stays at ``m = 1e4``: at
``1e5`` the identity alone would be 80 GB); jaxfit chooses by shape for the
same reason.

All cases are timed in interleaved rounds (``_harness``), each with its own
number of calls per sample (their times differ by orders of magnitude) and
every case in every round; ratios are medians of per-round ratios with
their quartiles. Results go to ``benchmarks/results/autodiff-<machine>
[-quick].json`` and ``.png``.

Run::

    python benchmarks/autodiff.py [--quick | --smoke]

The full run (``m = 1e5`` points) takes about three minutes on 2 busy CPU
cores, most of it in ``approx_fprime`` at ``n = 100`` (13 s a call) and
``jacrev`` on the tall problem (4 s a call, 2.6 GB peak RSS). ``--quick``
(``m = 1e4``, < 30 s) is a CI-sized run and ``--smoke`` (seconds) only
checks that the script works; they write ``autodiff-<machine>-quick``/
``-smoke`` files instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

EPS = float(np.finfo(np.float64).eps)
GRADIENT_METHODS = {
    "grad": "jax.grad",
    "fd": "FD (jitted)",
    "approx_fprime": "approx_fprime (NumPy)",
}
JACOBIAN_METHODS = {"jacfwd": "jax.jacfwd", "jacrev": "jax.jacrev"}


@dataclass(frozen=True)
class Config:
    params: tuple[int, ...]  # n for the gradient timings
    points: int  # m for the gradient timings
    tall: tuple[int, int]  # (m, n)
    wide: tuple[int, int]  # (m, n)
    repeats: int
    target_s: float  # length of one timed sample of each case


FULL = Config(
    params=(5, 10, 50, 100), points=100_000, tall=(10_000, 5), wide=(50, 2000),
    repeats=5, target_s=0.05,
)  # fmt: skip
QUICK = Config(
    params=(5, 10, 50, 100), points=10_000, tall=(2_000, 5), wide=(50, 500),
    repeats=5, target_s=0.01,
)  # fmt: skip
SMOKE = Config(
    params=(5, 10), points=1_000, tall=(300, 5), wide=(20, 100),
    repeats=2, target_s=0.002,
)  # fmt: skip
CONFIGS = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


# ----------------------------------------------------------------------------
# The model, in NumPy or jax.numpy (``xp``), and its exact gradient.


def model(xp, p, x):
    """``sum_j a_j exp(-k_j x)`` (+ ``p[-1]`` if ``n`` is odd); ``p = [a, k, c]``."""
    terms = p.shape[0] // 2
    amplitudes, rates = p[:terms], p[terms : 2 * terms]
    f = xp.exp(-x[:, None] * rates[None, :]) @ amplitudes
    return f + p[-1] if p.shape[0] % 2 else f


def loss(xp, p, x, y):
    r = model(xp, p, x) - y
    return 0.5 * (r @ r)


def exact_gradient(p, x, y) -> np.ndarray:
    """The closed-form gradient of :func:`loss` (NumPy, no autodiff)."""
    terms = p.shape[0] // 2
    amplitudes, rates = p[:terms], p[terms : 2 * terms]
    e = np.exp(-x[:, None] * rates[None, :])
    r = model(np, p, x) - y
    grad = [e.T @ r, -amplitudes * (e.T @ (x * r))]
    if p.shape[0] % 2:
        grad.append([np.sum(r)])
    return np.concatenate(grad)


def gradient_problem(n: int, m: int, rng: np.random.Generator):
    """``(p, x, y)``: data from a true curve, ``p`` 20% off it."""
    terms = n // 2
    x = np.linspace(0.0, 5.0, m)
    true = np.concatenate(
        [
            rng.uniform(0.5, 1.5, terms) / terms,
            np.geomspace(0.2, 5.0, terms),
            [0.1] * (n % 2),
        ]
    )
    y = model(np, true, x) + 0.01 * rng.normal(size=m)
    p = true * (1 + 0.2 * rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.0, n))
    return p, x, y


def max_rel_error(g, exact) -> float:
    g, exact = np.asarray(g, np.float64), np.asarray(exact, np.float64)
    return float(np.max(np.abs(g - exact) / np.abs(exact)))


# ----------------------------------------------------------------------------
# The gradients.


def jax_loss(p, x, y):
    import jax.numpy as jnp

    return loss(jnp, p, x, y)


def fd_gradient(fn: Callable):
    """2-point forward differences of ``fn(p, *args)``, one jitted call.

    The step is SciPy's default for ``approx_derivative(method="2-point")``
    (``sqrt(eps) * max(1, |p|)``, made exactly representable as ``(p + h) -
    p``); the ``n`` shifted evaluations run in a ``lax.map`` (one at a time,
    as SciPy calls them, each with its own ``O(m)`` temporaries).
    """
    import jax
    import jax.numpy as jnp

    def gradient(p, *args):
        h = np.sqrt(EPS) * jnp.maximum(1.0, jnp.abs(p))
        h = (p + h) - p
        f0 = fn(p, *args)
        shifted = jax.lax.map(
            lambda i: fn(p.at[i].add(h[i]), *args), jnp.arange(p.shape[0])
        )
        return (shifted - f0) / h

    return jax.jit(gradient)


def _blocking_case(fn, *args):
    """A harness case: ``number`` calls, each waited for (no overlap)."""
    import jax

    def case(number):
        for _ in range(number):
            jax.block_until_ready(fn(*args))

    return case


def time_gradients(n: int, config: Config, rng) -> dict:
    import jax
    import jax.numpy as jnp
    import scipy.optimize

    p, x, y = gradient_problem(n, config.points, rng)
    exact = exact_gradient(p, x, y)
    pj, xj, yj = (jnp.asarray(a) for a in (p, x, y))
    grad = jax.jit(jax.grad(jax_loss))
    fd = fd_gradient(jax_loss)

    def numpy_loss(q):
        return loss(np, q, x, y)

    def approx_fprime():
        return scipy.optimize.approx_fprime(p, numpy_loss, np.sqrt(EPS))

    functions = {
        "grad": lambda: grad(pj, xj, yj),
        "fd": lambda: fd(pj, xj, yj),
        "approx_fprime": approx_fprime,
    }
    first_call_s, errors, cases = {}, {}, {}
    for name, fn in functions.items():
        start = time.perf_counter()
        value = jax.block_until_ready(fn())
        first_call_s[name] = time.perf_counter() - start
        errors[name] = max_rel_error(value, exact)
        cases[name] = _blocking_case(fn)
    samples = _harness.interleaved_per_case(
        cases,
        repeats=config.repeats,
        target_s=config.target_s,
        min_rounds=config.repeats,
    )
    return {
        "n_params": n,
        "n_points": config.points,
        "evaluations": {"grad": "1 forward + 1 backward", "fd": n + 1},
        "first_call_s": first_call_s,
        "max_rel_error": errors,
        "times": {name: _harness.summarize(s) for name, s in samples.items()},
        "ratio_grad_to": {
            name: _harness.paired_ratio(samples["grad"], samples[name])
            for name in ("fd", "approx_fprime")
        },
    }


# ----------------------------------------------------------------------------
# Jacobians.


def tall_residual(p, x, y):
    import jax.numpy as jnp

    return model(jnp, p, x) - y


def wide_residual(p, a, b):
    import jax.numpy as jnp

    return a @ jnp.tanh(p) + 0.1 * jnp.sum(p) ** 2 / p.shape[0] - b


def jacobian_problem(shape: str, m: int, n: int, rng):
    if shape == "tall":
        p, x, y = gradient_problem(n, m, rng)
        return tall_residual, p, (x, y)
    a = rng.normal(size=(m, n)) / np.sqrt(n)
    return wide_residual, 0.1 * rng.normal(size=n), (a, rng.normal(size=m))


def time_jacobians(shape: str, m: int, n: int, config: Config, rng) -> dict:
    import jax
    import jax.numpy as jnp

    residual, p, data = jacobian_problem(shape, m, n, rng)
    args = [jnp.asarray(p), *(jnp.asarray(d) for d in data)]
    jacobians = {
        "jacfwd": jax.jit(jax.jacfwd(residual)),
        "jacrev": jax.jit(jax.jacrev(residual)),
    }
    first_call_s, values, cases = {}, {}, {}
    for name, jacobian in jacobians.items():
        start = time.perf_counter()
        values[name] = np.asarray(jax.block_until_ready(jacobian(*args)))
        first_call_s[name] = time.perf_counter() - start
        cases[name] = _blocking_case(jacobian, *args)
    scale = np.max(np.abs(values["jacfwd"]))
    difference = float(np.max(np.abs(values["jacfwd"] - values["jacrev"])) / scale)
    if difference > 1e-10:
        raise AssertionError(f"jacfwd and jacrev differ by {difference:.1e}")
    samples = _harness.interleaved_per_case(
        cases,
        repeats=config.repeats,
        target_s=config.target_s,
        min_rounds=config.repeats,
    )
    times = {name: _harness.summarize(s) for name, s in samples.items()}
    return {
        "shape": shape,
        "n_residuals": m,
        "n_params": n,
        "first_call_s": first_call_s,
        "max_rel_difference": difference,
        "times": times,
        "ratio_fwd_to_rev": _harness.paired_ratio(samples["jacfwd"], samples["jacrev"]),
        "faster": min(times, key=lambda name: times[name]["median_s"]),
        "expected": "jacfwd" if shape == "tall" else "jacrev",
    }


# ----------------------------------------------------------------------------
# Report.


def run_benchmark(config: Config) -> dict:
    import jax

    rng = np.random.default_rng(0)
    gradients, jacobians = [], []
    with jax.enable_x64(True):
        for n in config.params:
            start = time.perf_counter()
            gradients.append(time_gradients(n, config, rng))
            print(
                f"  gradient n={n}: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        for shape in ("tall", "wide"):
            m, n = getattr(config, shape)
            start = time.perf_counter()
            jacobians.append(time_jacobians(shape, m, n, config, rng))
            print(
                f"  {shape} Jacobian m={m} n={n}: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return {"gradients": gradients, "jacobians": jacobians}


def gradient_table(records: list[dict]) -> str:
    fmt = _harness.format_seconds
    headers = [
        "n", "m", "FD evaluations",
        *(f"{label}" for label in GRADIENT_METHODS.values()),
        "jax.grad / FD (jitted)", "jax.grad / approx_fprime",
        *(f"max rel err {label}" for label in GRADIENT_METHODS.values()),
    ]  # fmt: skip
    rows = [
        [
            r["n_params"],
            r["n_points"],
            r["evaluations"]["fd"],
            *(fmt(r["times"][name]["median_s"]) for name in GRADIENT_METHODS),
            _harness.format_ratio(r["ratio_grad_to"]["fd"]),
            _harness.format_ratio(r["ratio_grad_to"]["approx_fprime"]),
            *(f"{r['max_rel_error'][name]:.1e}" for name in GRADIENT_METHODS),
        ]
        for r in records
    ]
    return _harness.markdown_table(headers, rows)


def jacobian_table(records: list[dict]) -> str:
    fmt = _harness.format_seconds
    headers = ["shape", "m", "n", "jax.jacfwd", "jax.jacrev", "jacfwd / jacrev"]
    headers += ["faster"]
    rows = [
        [
            r["shape"],
            r["n_residuals"],
            r["n_params"],
            fmt(r["times"]["jacfwd"]["median_s"]),
            fmt(r["times"]["jacrev"]["median_s"]),
            _harness.format_ratio(r["ratio_fwd_to_rev"]),
            r["faster"],
        ]
        for r in records
    ]
    return _harness.markdown_table(headers, rows)


def plot(document: dict, path) -> Path:
    """Gradient time over jax.grad's and gradient errors by ``n`` (log
    axes), and the two Jacobian modes' times per shape."""
    gradients, jacobians = document["gradients"], document["jacobians"]
    plt = _harness.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    categories = [str(r["n_params"]) for r in gradients]
    ratios = {
        name: [_harness.inverse_ratio(r["ratio_grad_to"][name]) for r in gradients]
        for name in ("fd", "approx_fprime")
    }
    _harness.draw_bars(
        axes[0],
        {GRADIENT_METHODS[n]: [r["median"] for r in rs] for n, rs in ratios.items()},
        categories,
        errors={
            GRADIENT_METHODS[n]: [(r["q1"], r["q3"]) for r in rs]
            for n, rs in ratios.items()
        },
        lines={"jax.grad (1x)": 1.0},
        log=True,
    )
    axes[0].set_title("gradient: time / jax.grad's (lower is better)")
    _harness.draw_bars(
        axes[1],
        {
            GRADIENT_METHODS[name]: [r["max_rel_error"][name] for r in gradients]
            for name in GRADIENT_METHODS
        },
        categories,
        log=True,
        value_labels=False,
    )
    axes[1].set_title("gradient: max relative error")
    for ax in axes[:2]:
        ax.set_xlabel(f"parameters n ({gradients[0]['n_points']} points)")
    _harness.draw_bars(
        axes[2],
        {
            JACOBIAN_METHODS[name]: [r["times"][name]["median_s"] for r in jacobians]
            for name in JACOBIAN_METHODS
        },
        [f"{r['shape']}\nm={r['n_residuals']}, n={r['n_params']}" for r in jacobians],
        log=True,
    )
    axes[2].set_ylabel("seconds (median)")
    axes[2].set_title("full Jacobian: forward vs reverse mode")
    fig.suptitle("Autodiff vs finite differences (float64)")
    return _harness.save_figure(fig, path)


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table."""
    rows = []
    for r in document["gradients"]:
        case = f"gradient, n={r['n_params']}, m={r['n_points']}"
        for name in ("fd", "approx_fprime"):
            rows.append(
                _harness.headline_row(
                    case,
                    GRADIENT_METHODS[name],
                    r["ratio_grad_to"][name],
                    measured="jax.grad",
                )
            )
    for r in document["jacobians"]:
        ratio = r["ratio_fwd_to_rev"]
        fwd = r["shape"] == "tall"
        rows.append(
            _harness.headline_row(
                f"{r['shape']} Jacobian, m={r['n_residuals']}, n={r['n_params']}",
                "jax.jacrev" if fwd else "jax.jacfwd",
                ratio if fwd else _harness.inverse_ratio(ratio),
                measured="jax.jacfwd" if fwd else "jax.jacrev",
                target=1.0,  # the design's rule: forward if tall, reverse if wide
            )
        )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows (``mode``: "full", "quick" or "smoke")."""
    config = CONFIGS[mode]
    start = time.perf_counter()
    print(f"machine: {_harness.machine_slug()}", file=sys.stderr)
    results = run_benchmark(config)
    elapsed = time.perf_counter() - start

    print("## Gradient of a least-squares loss (float64)\n")
    print(gradient_table(results["gradients"]))
    print("\n## Full residual Jacobian: forward vs reverse mode (float64)\n")
    print(jacobian_table(results["jacobians"]))
    json_path = _harness.results_path("autodiff", "json", tag=_harness.tag_of(mode))
    png_path = json_path.with_suffix(".png")
    _harness.write_json(
        json_path,
        {
            "benchmark": "autodiff",
            "description": "gradient of 0.5*|sum_j a_j exp(-k_j x) (+c) - y|^2: "
            "jax.grad vs 2-point finite differences of the same jitted loss "
            "(n+1 evaluations in one lax.map) vs scipy.optimize.approx_fprime "
            "on a NumPy loss; full Jacobian jax.jacfwd vs jax.jacrev for a tall "
            "and a wide problem; ratios are medians of per-round time ratios "
            "(lower is better for the numerator)",
            "config": dataclasses.asdict(config) | {"mode": mode},
            "elapsed_s": round(elapsed, 1),
            **results,
        },
    )
    plot(json.loads(json_path.read_text()), png_path)
    print(f"\nwrote {json_path} and {png_path.name} in {elapsed:.0f} s")
    return _harness.collect("autodiff", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/autodiff.py [--quick | --smoke]``: see run.py."""
    return _harness.main("autodiff", argv)


if __name__ == "__main__":
    sys.exit(main())
