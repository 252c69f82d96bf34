"""Time to result: one whole call in a fresh process, compile included.

Most fits run once, so what a user waits for is the first call of a new
process. Each case here runs in its own child process and times the call
alone (after the imports and the data), side by side with its competitor in
interleaved rounds:

* ``curve_fit`` (a 3-parameter exponential, float64) against SciPy's
  ``curve_fit`` (``lm``) and against two floors: one jitted program that
  forms the model's residual, its ``jacfwd`` Jacobian and the normal
  equations on the same data, compiled and run once (the least any autodiff
  fitter pays), and a minimal hand-written LM ``while_loop`` (those normal
  equations, a damped solve, the trial cost, accept or reject, one stopping
  test: the least an iterative autodiff fitter pays);
* ``least_squares_solve`` against SciPy's ``least_squares(method='lm')``;
* ``fit_least_squares`` (streamed, batches of 4096 rows) against the same;
* ``lbfgs`` on Rosenbrock-100 (a jitted ``while_loop``, as
  ``benchmarks/linesearch.py`` runs it) against SciPy's L-BFGS-B with a
  jitted JAX gradient (whose compile is part of its time too), and against
  ``optax.lbfgs`` in the same loop;
* ``chain(clip_by_global_norm, adam)``, 1000 steps in one jitted scan (as
  ``benchmarks/transforms.py`` runs it), against Optax's chain.

The other benchmarks time their first calls in process (``first_call_s``
in their JSON); the fresh-process rows of every public entry point are
here.

    python benchmarks/time_to_result.py [--quick]   # = run.py --only time_to_result

Results: ``benchmarks/results/time_to_result-<machine>[-quick].{json,png}``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

CONFIGS = {
    "full": {"curve_sizes": (100, 10_000, 1_000_000), "rounds": 3},
    "quick": {"curve_sizes": (100, 10_000), "rounds": 2},
    "smoke": {"curve_sizes": (100,), "rounds": 1},
}
SOLVE_SIZE = 10_000  # least_squares_solve's data
# benchmarks/transforms.py's scan: 1000 steps of chain(clip, adam) over
# 2**16 float32 parameters in 100 leaves, params and state made in the jit.
CHAIN_STEPS, CHAIN_SIZE, CHAIN_LEAVES = 1000, 2**16, 100
CHAIN_CASE = f"chain(clip, adam), {CHAIN_LEAVES} leaves, {CHAIN_STEPS} steps"
STREAM_SIZE = 1_000_000  # fit_least_squares' data
P0 = (1.0, 1.0, 0.0)
# (case, measured, competitor, sizes key or fixed size, target)
PAIRS = (
    ("curve_fit", "jaxfit curve_fit", "floor program", "curve", 2.0),
    ("curve_fit", "jaxfit curve_fit", "minimal LM program", "curve", None),
    ("curve_fit", "jaxfit curve_fit", "scipy curve_fit lm", "curve", None),
    ("least_squares_solve", "jaxfit least_squares_solve", "scipy lm", SOLVE_SIZE, None),
    ("fit_least_squares", "jaxfit fit_least_squares", "scipy lm", STREAM_SIZE, None),
    ("lbfgs, rosenbrock-100", "jaxfit lbfgs", "scipy L-BFGS-B", 0, None),
    ("lbfgs, rosenbrock-100", "jaxfit lbfgs", "optax lbfgs", 0, None),
    (CHAIN_CASE, "jaxfit chain", "optax chain", 0, None),
)
# curve_fit at 1e6 points: the target against SciPy.
SCIPY_TARGET_AT = {1_000_000: 1.0}


def _data(m: int):
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 5.0, m)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * rng.normal(size=m)
    return x, y


def _run_case(driver: str, m: int):
    """The timed call of ``driver`` (in the child; imports happen before)."""
    import jax
    import jax.numpy as jnp
    import scipy.optimize

    import jaxfit

    x, y = _data(m)
    model = lambda x, a, b, c: a * jnp.exp(-b * x) + c
    residual = lambda p, b: p[0] * jnp.exp(-p[1] * b[0]) + p[2] - b[1]
    numpy_residual = lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y
    if driver == "jaxfit curve_fit":
        return lambda: jaxfit.curve_fit(model, x, y, p0=P0)
    if driver == "scipy curve_fit lm":
        f = lambda x, a, b, c: a * np.exp(-b * x) + c
        return lambda: scipy.optimize.curve_fit(f, x, y, p0=P0)
    if driver == "floor program":

        def normal_equations(p, x, y):
            r = residual(p, (x, y))
            J = jax.jacfwd(residual)(p, (x, y))
            return J.T @ J, J.T @ r, 0.5 * r @ r

        def floor():
            with jax.enable_x64(True):
                program = jax.jit(normal_equations)
                return jax.block_until_ready(program(np.array(P0), x, y))

        return floor
    if driver == "minimal LM program":
        return functools.partial(_minimal_lm, residual, x, y)
    if driver == "jaxfit least_squares_solve":

        def solve():
            with jax.enable_x64(True):
                sol = jaxfit.least_squares_solve(residual, np.array(P0), (x, y))
                return jax.block_until_ready(sol)

        return solve
    if driver == "jaxfit fit_least_squares":

        def stream():
            with jax.enable_x64(True):
                return jaxfit.fit_least_squares(
                    residual, jnp.array(P0), (x, y), batch_size=4096, progress=False
                )

        return stream
    if driver == "scipy lm":
        return lambda: scipy.optimize.least_squares(
            numpy_residual, np.array(P0), method="lm"
        )
    if driver.endswith(" chain"):
        import transforms

        variant = transforms.VARIANTS[driver.split()[0]]
        shapes = transforms.leaf_shapes(CHAIN_SIZE, CHAIN_LEAVES)
        run = transforms.jit_scan(variant, variant.make_tx(), shapes, CHAIN_STEPS)
        return lambda: jax.block_until_ready(run(np.float32(0.5)))
    import linesearch

    problem = linesearch.PROBLEMS["rosenbrock-100"]
    if driver in ("jaxfit lbfgs", "optax lbfgs"):
        method = linesearch.METHODS[driver]
        return lambda: jax.block_until_ready(
            linesearch.make_jax_solver(method, problem, 1000)(problem.x0)
        )
    return lambda: linesearch.make_scipy_solver(problem, 1000)(problem.x0)


def minimal_lm(residual):
    """A bare Levenberg-Marquardt ``while_loop``, jitted: ``solve(p0, x, y)``.

    The normal equations of ``residual(p, (x, y))``'s ``jacfwd`` Jacobian, a
    damped solve, the trial cost, accept or reject, one stopping test: the
    least an iterative autodiff fitter compiles and runs (no covariance, no
    status, no argument checks).
    """
    import jax
    import jax.numpy as jnp

    def solve(p, x, y):
        def body(carry):
            p, damping, k, _ = carry
            r, J = residual(p, (x, y)), jax.jacfwd(residual)(p, (x, y))
            A, g = J.T @ J, J.T @ r
            d = jnp.linalg.solve(A + damping * jnp.diag(jnp.diag(A)), -g)
            cost, new = 0.5 * r @ r, 0.5 * jnp.sum(residual(p + d, (x, y)) ** 2)
            ok = new < cost
            return (
                jnp.where(ok, p + d, p),
                jnp.where(ok, damping / 3, damping * 2),
                k + 1,
                ok & (cost - new <= 1e-8 * cost),
            )

        start = (p, jnp.asarray(1e-3, p.dtype), 0, False)
        return jax.lax.while_loop(lambda c: (c[2] < 400) & ~c[3], body, start)

    return jax.jit(solve)


def _minimal_lm(residual, x, y):
    """:func:`minimal_lm` compiled and run once."""
    import jax

    with jax.enable_x64(True):
        return jax.block_until_ready(minimal_lm(residual)(np.array(P0), x, y))


def child(driver: str, m: int) -> None:
    """Runs in the child: prints the seconds of one call."""
    call = _run_case(driver, m)
    start = time.perf_counter()
    call()
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _once(driver: str, m: int) -> float:
    return _harness.run_child(__file__, "--child", driver, m)["seconds"]


def run(config: dict) -> list[dict]:
    records = []
    for case, measured, competitor, size, target in PAIRS:
        sizes = config["curve_sizes"] if size == "curve" else (size,)
        for m in sizes:
            once = lambda driver, m=m: _once(driver, m)
            pair = _harness.fresh_process_pair(
                once, measured, competitor, config["rounds"]
            )
            if competitor.startswith("scipy curve_fit"):
                target = SCIPY_TARGET_AT.get(m)
            record = {"case": case, "points": m, **pair, "target": target}
            records.append(record)
            print(
                f"  {case} {m}: {measured} / {competitor} = "
                f"{record['ratio']['median']:.3g}",
                file=sys.stderr,
                flush=True,
            )
    return records


def _label(r: dict) -> str:
    return r["case"] + (f", {r['points']:.0e} points" if r["points"] else "")


def table(records: list[dict]) -> str:
    rows = [
        [
            _label(r),
            r["measured"],
            r["competitor"],
            _harness.format_seconds(r["measured_s"]["median"]),
            _harness.format_seconds(r["competitor_s"]["median"]),
            _harness.format_ratio(r["ratio"]),
            "-" if r["target"] is None else f"<= {r['target']:g}",
        ]
        for r in records
    ]
    headers = ["case", "measured", "competitor", "measured", "competitor", "ratio"]
    return _harness.markdown_table([*headers, "target"], rows)


def plot(document: dict, path) -> Path:
    """Each case's first-call time over its competitor's (log axis)."""
    records = document["records"]
    panel = "fresh-process call, compile included / competitor's"
    return _harness.bar_chart(
        path,
        {panel: {"jaxfit": [r["ratio"]["median"] for r in records]}},
        [f"{_label(r)}\nvs {r['competitor']}" for r in records],
        errors={
            panel: {"jaxfit": [(r["ratio"]["q1"], r["ratio"]["q3"]) for r in records]}
        },
        ylabel="time / competitor's (< 1: jaxfit faster)",
        reference=1.0,
        ncols=1,
        title="Time to result (fresh process, compile included)",
    )


def headline(document: dict) -> list[dict]:
    """One row per case: time to result against the competitor."""
    return [
        _harness.headline_row(
            f"{_label(r)}: time to result (fresh process)",
            r["competitor"],
            r["ratio"],
            target=r["target"],
            measured=r["measured"],
        )
        for r in document["records"]
    ]


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG."""
    start = time.perf_counter()
    records = run(CONFIGS[mode])
    print("\n## Time to result (fresh process, compile included)\n")
    print(table(records))
    json_path = _harness.results_path(
        "time_to_result", "json", tag=_harness.tag_of(mode)
    )
    _harness.write_json(
        json_path,
        {
            "benchmark": "time_to_result",
            "mode": mode,
            "elapsed_s": round(time.perf_counter() - start, 1),
            "records": records,
        },
    )
    plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
    print(f"wrote {json_path}")
    return _harness.collect("time_to_result", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/time_to_result.py [--quick]`` (see run.py), or
    ``--child DRIVER POINTS``: one timed call in this process."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(argv[1], int(argv[2]))
        return 0
    return _harness.main("time_to_result", argv)


if __name__ == "__main__":
    sys.exit(main())
