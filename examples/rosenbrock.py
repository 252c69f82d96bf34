"""Line searches compared on the Rosenbrock function (2-D and 100-D).

Each method minimises ``f(x) = sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``
from the standard start ``(-1.2, 1, -1.2, 1, ...)`` in float64 (a scoped
``jax.enable_x64``), in one jitted ``lax.scan`` of at most ``--steps`` steps
that stops moving once the gradient's infinity norm is below ``--gtol``:

- ``jaxfit.lbfgs()``: L-BFGS with jaxfit's zoom (strong Wolfe) line search;
- ``sgd + backtracking``: ``jaxfit.chain(jaxfit.sgd(1.0),
  jaxfit.scale_by_backtracking_linesearch(30, store_grad=True))``, gradient
  descent with an Armijo line search;
- ``sgd + zoom``: ``jaxfit.chain(jaxfit.sgd(1.0),
  jaxfit.scale_by_zoom_linesearch(30))``;
- ``adam``: ``jaxfit.adam(0.01)``, a fixed learning rate and no line search;
- ``optax.lbfgs()``, Optax's L-BFGS, for reference.

The line-search methods read the value and gradient of the accepted trial
back from their state (``jaxfit.value_and_grad_from_state``), so a step costs
only its line search's evaluations. Prints iterations, evaluations (calls of
the objective, counted by the line searches themselves) and the final value
for each method and dimension; writes ``rosenbrock.png`` (the 2-D paths on the
contour and the loss against evaluations) next to this script (or to
``--out``).

Run: ``python examples/rosenbrock.py [--steps N] [--gtol G] [--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit


def rosenbrock(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


class Method(NamedTuple):
    make_tx: Callable[[], optax.GradientTransformation]
    # "jaxfit" / "optax": a line search whose state holds the last trial's
    # value, gradient and evaluation count; "plain": no line search.
    kind: str


METHODS = {
    "jaxfit lbfgs (zoom)": Method(jaxfit.lbfgs, "jaxfit"),
    "jaxfit sgd + backtracking": Method(
        lambda: jaxfit.chain(
            jaxfit.sgd(1.0),
            jaxfit.scale_by_backtracking_linesearch(30, store_grad=True),
        ),
        "jaxfit",
    ),
    "jaxfit sgd + zoom": Method(
        lambda: jaxfit.chain(jaxfit.sgd(1.0), jaxfit.scale_by_zoom_linesearch(30)),
        "jaxfit",
    ),
    "jaxfit adam(0.01)": Method(lambda: jaxfit.adam(0.01), "plain"),
    "optax lbfgs": Method(optax.lbfgs, "optax"),
}


def make_solver(method: Method, steps: int, gtol: float):
    """A jitted ``x0 -> (x, value, gnorm, iterations, evaluations, trace)``.

    ``trace`` holds per step the params, the value and the evaluations so far
    (frozen after convergence).
    """
    tx = method.make_tx()
    if method.kind == "jaxfit":
        value_and_grad = jaxfit.value_and_grad_from_state(rosenbrock)
        counter = "num_evaluations"
    elif method.kind == "optax":
        value_and_grad = optax.value_and_grad_from_state(rosenbrock)
        counter = "num_linesearch_steps"
    else:
        plain = jax.value_and_grad(rosenbrock)
        value_and_grad = lambda x, state: plain(x)

    def step(carry):
        x, state, value, grad, iterations, evals = carry
        updates, state = tx.update(
            grad, state, x, value=value, grad=grad, value_fn=rosenbrock
        )
        x = optax.apply_updates(x, updates)
        if method.kind == "plain":
            evals = evals + 1
        else:
            evals = evals + optax.tree.get(state, counter).astype(jnp.int32)
            # value_and_grad_from_state evaluates only when the stored value
            # is not finite (never after a successful search): count it then.
            stored = optax.tree.get(state, "value")
            evals = evals + (~jnp.isfinite(stored)).astype(jnp.int32)
        value, grad = value_and_grad(x, state=state)
        return x, state, value, grad, iterations + 1, evals

    def done(carry):
        return jnp.max(jnp.abs(carry[3])) <= gtol

    def scan_body(carry, _):
        carry = jax.lax.cond(done(carry), lambda c: c, step, carry)
        x, _, value, _, _, evals = carry
        return carry, (x, value, evals)

    @jax.jit
    def solve(x0):
        state = tx.init(x0)
        value, grad = value_and_grad(x0, state=state)
        carry = (x0, state, value, grad, jnp.int32(0), jnp.int32(1))
        first = (x0[None], value[None], carry[-1][None])
        if method.kind == "optax":
            # Optax's line-search state changes dtype after its first update
            # and a scan carry may not: take that step before the scan.
            carry = step(carry)
            first = jax.tree.map(
                lambda a, b: jnp.concatenate([a, b[None]]),
                first,
                (carry[0], carry[2], carry[-1]),
            )
        carry, trace = jax.lax.scan(scan_body, carry, length=steps - len(first[0]) + 1)
        x, _, value, grad, iterations, evals = carry
        trace = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, trace)
        return x, value, jnp.max(jnp.abs(grad)), iterations, evals, trace

    return solve


def _style(i, name):
    """Line styles: Optax's L-BFGS takes jaxfit's steps, so dash it on top."""
    if name == "optax lbfgs":
        return {"color": "k", "ls": "--", "lw": 1}
    if "lbfgs" in name:
        return {"color": f"C{i}", "lw": 4, "alpha": 0.5, "marker": ".", "ms": 4}
    return {"color": f"C{i}", "lw": 0.8, "marker": ".", "ms": 2}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="most iterations")
    parser.add_argument("--gtol", type=float, default=1e-6)
    parser.add_argument(
        "--dims", type=int, nargs="+", default=[2, 100], help="dimensions"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("rosenbrock.png"),
    )
    args = parser.parse_args()

    results = {}
    print(
        f"{'dim':>4} {'method':<27} {'iterations':>10} {'evaluations':>11} "
        f"{'final f':>10} {'|grad|inf':>9} {'seconds':>8}"
    )
    with jax.enable_x64(True):
        for dim in args.dims:
            x0 = jnp.asarray(np.resize([-1.2, 1.0], dim), jnp.float64)
            for name, method in METHODS.items():
                solve = make_solver(method, args.steps, args.gtol)
                t0 = time.perf_counter()
                out = jax.device_get(solve(x0))
                seconds = time.perf_counter() - t0
                _, value, gnorm, iterations, evals, _ = out
                results[dim, name] = out
                flag = "" if gnorm <= args.gtol else " (stopped at --steps)"
                print(
                    f"{dim:4d} {name:<27} {iterations:10d} {evals:11d} "
                    f"{value:10.3e} {gnorm:9.1e} {seconds:8.2f}{flag}"
                )
    print(f"(seconds include compilation; converged: |grad|inf <= {args.gtol:g})")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    panels = 1 + len(args.dims)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.6))
    if 2 in args.dims:
        u, v = np.meshgrid(np.linspace(-1.6, 1.8, 300), np.linspace(-0.5, 2.3, 300))
        f = 100 * (v - u**2) ** 2 + (1 - u) ** 2
        axes[0].contour(u, v, np.log10(f + 1e-3), levels=25, colors="0.8")
        for i, name in enumerate(METHODS):
            path = results[2, name][-1][0]
            axes[0].plot(path[:, 0], path[:, 1], label=name, **_style(i, name))
        axes[0].plot([1], [1], "k*", ms=12)
        axes[0].set(xlabel="x0", ylabel="x1", title="2-D paths from (-1.2, 1)")
        axes[0].legend(fontsize=7)
    else:
        axes[0].axis("off")
    for ax, dim in zip(axes[1:], args.dims, strict=True):
        for i, name in enumerate(METHODS):
            _, values, evals = results[dim, name][-1]
            values = np.maximum(values, 1e-20)
            ax.loglog(evals, values, label=name, **_style(i, name))
        ax.set(
            xlabel="evaluations of f",
            ylabel="f(x)",
            title=f"Rosenbrock, {dim} dimensions",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
