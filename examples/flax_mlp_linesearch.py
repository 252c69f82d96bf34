"""A Flax MLP trained with jaxfit line searches, against plain Adam.

A ``flax.linen`` MLP (1 -> 32 -> 32 -> 1, tanh) learns a noisy 1-D curve
``y = sin(2x) + 0.3 x`` from 256 points, full batch, in a Flax
``TrainState``. Linen's ``TrainState.apply_gradients`` calls ``tx.update``
without the value and objective a line search needs, so the line-search
chains step with ``jaxfit.flax.apply_gradients``, which passes ``value=``,
``grad=``, ``value_fn=`` and ``batch=`` (the recipe of docs/linesearch.md):

- ``clip + sgd + zoom``: ``jaxfit.chain(jaxfit.clip_by_global_norm(10.0),
  jaxfit.sgd(1.0), jaxfit.scale_by_zoom_linesearch(20))``: gradient descent
  whose step size satisfies the strong Wolfe conditions;
- ``sgd + backtracking``: ``jaxfit.chain(jaxfit.sgd(1.0),
  jaxfit.scale_by_backtracking_linesearch(20))`` (Armijo, value-only
  trials, steps up to 1);
- ``lbfgs``: ``jaxfit.lbfgs()`` (L-BFGS directions, zoom line search);
- ``adam(0.01)``: ``jaxfit.adam(0.01)`` through the ordinary
  ``state.apply_gradients``, no line search.

Every run is one jitted ``lax.scan`` over ``--steps`` steps. Prints the final
loss of each and the evaluations of the loss it took (one value-and-gradient
per step plus the line search's trials). Writes ``flax_mlp_linesearch.png``
(loss against steps and against evaluations, and the fitted curves) next to
this script (or to ``--out``). Needs Flax (``pip install "jaxfit[examples]"``).

Run: ``python examples/flax_mlp_linesearch.py [--steps N] [--points M]
[--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

import jaxfit
from jaxfit.flax import apply_gradients


class MLP(nn.Module):
    width: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.width)(x))
        x = nn.tanh(nn.Dense(self.width)(x))
        return nn.Dense(1)(x)


def target(x):
    return np.sin(2 * x) + 0.3 * x


CHAINS = {
    "clip + sgd + zoom": lambda: jaxfit.chain(
        jaxfit.clip_by_global_norm(10.0),
        jaxfit.sgd(1.0),
        jaxfit.scale_by_zoom_linesearch(20),
    ),
    "sgd + backtracking": lambda: jaxfit.chain(
        jaxfit.sgd(1.0),
        jaxfit.scale_by_backtracking_linesearch(20),
    ),
    "lbfgs": jaxfit.lbfgs,
    "adam(0.01)": lambda: jaxfit.adam(0.01),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("flax_mlp_linesearch.png"),
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = np.sort(rng.uniform(-3.0, 3.0, args.points)).astype(np.float32)[:, None]
    y = (target(x) + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
    batch = (jnp.asarray(x), jnp.asarray(y))
    model = MLP()
    params = model.init(jax.random.key(args.seed), batch[0])["params"]

    def loss(params, batch):
        x, y = batch
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    def train(tx, line_search):
        state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)

        def step(state, _):
            value, grads = jax.value_and_grad(loss)(state.params, batch)
            if line_search:
                state = apply_gradients(
                    state, grads=grads, value=value, value_fn=loss, batch=batch
                )
                trials = optax.tree.get(state.opt_state, "num_evaluations")
            else:
                state = state.apply_gradients(grads=grads)
                trials = jnp.int32(0)
            return state, (value, 1 + trials)

        state, (values, evals) = jax.jit(
            lambda s: jax.lax.scan(step, s, length=args.steps)
        )(state)
        return state, values, evals

    results = {}
    print(f"{'chain':<20} {'final loss':>10} {'evaluations':>11} {'seconds':>8}")
    for name, make_tx in CHAINS.items():
        t0 = time.perf_counter()
        state, values, evals = jax.device_get(train(make_tx(), name != "adam(0.01)"))
        seconds = time.perf_counter() - t0
        final = float(loss(state.params, batch))
        results[name] = (state.params, values, np.cumsum(evals), final)
        print(f"{name:<20} {final:10.5f} {int(evals.sum()):11d} {seconds:8.2f}")
    print(
        f"({args.steps} full-batch steps each; seconds include compilation; "
        "the noise variance is 0.01)"
    )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for i, (name, (_, values, evals, _)) in enumerate(results.items()):
        axes[0].semilogy(values, color=f"C{i}", label=name)
        axes[1].semilogy(evals, values, color=f"C{i}", label=name)
    axes[0].set(xlabel="step", ylabel="training loss (MSE)", title="loss per step")
    axes[1].set(
        xlabel="evaluations of the loss",
        ylabel="training loss (MSE)",
        title="loss per evaluation",
    )
    for ax in axes[:2]:
        ax.axhline(0.01, color="k", lw=0.5, ls=":", label="noise variance")
        ax.legend(fontsize=8)
    grid = np.linspace(-3.2, 3.2, 300, dtype=np.float32)[:, None]
    axes[2].plot(x, y, ".", ms=3, color="0.6", label="data")
    axes[2].plot(grid, target(grid), "k--", lw=1, label="truth")
    for i, (name, (fitted, *_)) in enumerate(results.items()):
        prediction = model.apply({"params": fitted}, grid)
        axes[2].plot(grid, prediction, color=f"C{i}", label=name)
    axes[2].set(xlabel="x", ylabel="y", title="Flax MLP fits")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
