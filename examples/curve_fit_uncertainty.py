"""Error bars and a confidence band from ``jaxfit.curve_fit``.

A damped oscillation ``y = A exp(-t / tau) cos(2 pi f t + phi) + c`` is
measured with known, point-dependent noise ``sigma``. ``jaxfit.curve_fit``
fits it with ``sigma=`` and ``absolute_sigma=True`` (the errors are known, so
the covariance is not rescaled by the reduced chi-square), exactly as
``scipy.optimize.curve_fit`` would:

- the parameter errors are ``perr = sqrt(diag(pcov))``;
- the confidence band of the fitted curve propagates ``pcov`` through the
  model's Jacobian with respect to the parameters, ``J = jax.jacfwd(model)``:
  ``var(model(t)) = diag(J pcov J^T)`` (first-order, "delta method").

If SciPy is installed, the same fit is repeated with
``scipy.optimize.curve_fit`` and both results are printed side by side.
Writes ``curve_fit_uncertainty.png`` (data with error bars, fit, 1- and
2-sigma bands; the band around the fit with the truth; normalised residuals)
next to this script (or to ``--out``).

Run: ``python examples/curve_fit_uncertainty.py [--points N] [--seed S]
[--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxfit

NAMES = ("amplitude", "tau", "freq", "phase", "offset")
TRUE = np.array([2.0, 3.0, 0.8, 0.4, 0.3])


def make_model(xp):
    """The model written once for ``jax.numpy`` (jaxfit) and NumPy (SciPy)."""

    def model(t, amplitude, tau, freq, phase, offset):
        return (
            amplitude * xp.exp(-t / tau) * xp.cos(2 * np.pi * freq * t + phase) + offset
        )

    return model


model = make_model(jnp)


def confidence_band(t, popt, pcov):
    """The model and its standard error at ``t``: ``sqrt(diag(J pcov J^T))``."""
    with jax.enable_x64(True):  # curve_fit's float64, for this computation too
        t = jnp.asarray(t, jnp.float64)
        p = jnp.asarray(popt, jnp.float64)
        curve = lambda p: model(t, *p)
        J = jax.jacfwd(curve)(p)  # (len(t), n_params)
        var = jnp.einsum("ij,jk,ik->i", J, jnp.asarray(pcov), J)
        return np.asarray(curve(p)), np.sqrt(np.asarray(var))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("curve_fit_uncertainty.png"),
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    t = np.sort(rng.uniform(0.0, 8.0, args.points))
    # Noise grows along t (a detector that degrades): known, point by point.
    sigma = 0.05 + 0.04 * t
    y = make_model(np)(t, *TRUE) + sigma * rng.normal(size=t.size)
    p0 = [1.5, 2.0, 0.75, 0.0, 0.0]

    times = []
    for _ in range(2):  # the second call reuses the compiled solver
        t0 = time.perf_counter()
        fit = jaxfit.curve_fit(
            model, t, y, p0, sigma=sigma, absolute_sigma=True, return_result=True
        )
        times.append(time.perf_counter() - t0)
    first, repeat = times
    popt, pcov, perr = fit.popt, fit.pcov, fit.perr  # perr = sqrt(diag(pcov))
    chi2 = 2 * fit.cost  # cost is half the chi-square with sigma weights
    dof = t.size - len(NAMES)
    print(
        f"jaxfit.curve_fit: {t.size} points, {fit.nfev} evaluations, "
        f"{first:.2f} s first call (compile included), {repeat * 1e3:.1f} ms "
        f"repeat; chi2/dof = {chi2:.1f}/{dof} = {chi2 / dof:.3f}"
    )

    scipy_fit = None
    try:
        import scipy.optimize

        s_popt, s_pcov = scipy.optimize.curve_fit(
            make_model(np), t, y, p0, sigma=sigma, absolute_sigma=True
        )
        scipy_fit = (s_popt, np.sqrt(np.diag(s_pcov)))
    except ImportError:
        print("no SciPy comparison: scipy is missing (pip install scipy)")

    header = f"{'parameter':<10} {'true':>7} {'jaxfit':>18} {'pull':>6}"
    if scipy_fit:
        header += f" {'scipy':>18}"
    print(header)
    for i, name in enumerate(NAMES):
        pull = (popt[i] - TRUE[i]) / perr[i]
        line = f"{name:<10} {TRUE[i]:7.4f} {popt[i]:8.4f} ± {perr[i]:7.4f} {pull:6.2f}"
        if scipy_fit:
            line += f" {scipy_fit[0][i]:8.4f} ± {scipy_fit[1][i]:7.4f}"
        print(line)
    inside = np.abs((popt - TRUE) / perr) <= 1
    print(
        f"{int(inside.sum())} of {len(NAMES)} parameters within 1 sigma of the "
        "truth (68% expected on average)"
    )
    if scipy_fit:
        dp = np.max(np.abs(popt - scipy_fit[0]) / perr)
        de = np.max(np.abs(perr / scipy_fit[1] - 1))
        print(
            f"jaxfit vs scipy: max |popt difference| = {dp:.1e} sigma, "
            f"max relative perr difference = {de:.1e}"
        )

    grid = np.linspace(0.0, 8.0, 400)
    curve, err = confidence_band(grid, popt, pcov)
    true_curve = make_model(np)(grid, *TRUE)
    covered = np.mean(np.abs(true_curve - curve) <= 2 * err)
    print(
        f"confidence band: median 1-sigma half-width {np.median(err):.4f}; "
        f"the true curve lies inside the 2-sigma band at {covered:.0%} of "
        "the grid"
    )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1.5, 1]}
    )
    top.fill_between(grid, curve - 2 * err, curve + 2 * err, color="C1", alpha=0.2)
    top.fill_between(grid, curve - err, curve + err, color="C1", alpha=0.4)
    top.errorbar(t, y, sigma, fmt=".", ms=3, color="C0", alpha=0.6, label="data")
    top.plot(grid, true_curve, "k--", lw=1, label="truth")
    top.plot(
        grid, curve, color="C1", label=r"jaxfit.curve_fit ($1\sigma$, $2\sigma$ bands)"
    )
    top.set(ylabel="y", title="Damped oscillation: fit with error bars and band")
    top.legend(loc="upper right")
    text = "\n".join(
        f"{n} = {p:.3f} ± {e:.3f}" for n, p, e in zip(NAMES, popt, perr, strict=True)
    )
    top.text(0.55, 0.05, text, transform=top.transAxes, family="monospace", size=8)
    # The band is narrow next to the data: show it around the fit itself.
    middle.fill_between(
        grid, -2 * err, 2 * err, color="C1", alpha=0.2, label=r"$2\sigma$"
    )
    middle.fill_between(grid, -err, err, color="C1", alpha=0.4, label=r"$1\sigma$")
    middle.plot(grid, true_curve - curve, "k--", lw=1, label="truth - fit")
    middle.set(ylabel="truth - fit")
    middle.legend(loc="upper right", ncol=3, fontsize=8)
    bottom.axhline(0, color="k", lw=0.5)
    bottom.plot(t, (y - model(t, *popt)) / sigma, ".", ms=3)
    bottom.set(xlabel="t", ylabel=r"(y - fit) / $\sigma$")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
