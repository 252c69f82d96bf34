"""curve_fit keeps SciPy 1.17's semantics: what the model sees, the arguments
SciPy accepts, its return values, its exceptions, models JAX cannot trace,
unhashable models. Each test compares with ``scipy.optimize.curve_fit`` in
the same process."""

from __future__ import annotations

import dataclasses
import gc
import math
import re
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxfit

X = np.linspace(0, 4, 40)
Y = 2.5 * np.exp(-1.3 * X) + 0.5 + 0.01 * np.sin(7 * X)


def decay(xp):
    return lambda x, a, k, c: a * xp.exp(-k * x) + c


def _both(jaxfit_f, scipy_f, *args, **kwargs):
    """``(jaxfit's, SciPy's)`` results for the same arguments."""
    return (
        jaxfit.curve_fit(jaxfit_f, *args, **kwargs),
        so.curve_fit(scipy_f, *args, **kwargs),
    )


def _assert_fits_close(ours, ref, rtol=1e-6):
    np.testing.assert_allclose(ours[0], ref[0], rtol=rtol)
    d = np.sqrt(np.outer(np.diag(ref[1]), np.diag(ref[1])))
    np.testing.assert_allclose(ours[1] / d, ref[1] / d, atol=1e-4)


# 1. The model sees exactly `xdata`.


def test_model_that_looks_at_other_points_gets_scipys_answer():
    x = np.linspace(0, 10, 21)
    y = 3 * (x - x.mean()) + 5 + np.sin(x)
    f = lambda x, a, b: a * (x - x.mean()) + b  # works with NumPy and JAX
    ours, ref = _both(f, f, x, y)
    _assert_fits_close(ours, ref, rtol=1e-9)
    assert abs(ours[0][1] - 5.1585) < 1e-3  # padding used to give 4.48


def test_model_closing_over_an_array_of_the_data_length_fits():
    x = np.linspace(0, 10, 21)
    baseline = np.sin(x)
    y = 3 * x - 10 + baseline + 0.1 * np.cos(3 * x)
    f = lambda x, a, b: a * x + b + baseline
    ours, ref = _both(f, f, x, y)
    _assert_fits_close(ours, ref, rtol=1e-9)


def test_only_a_pointwise_model_is_padded_and_it_traces_once():
    seen = []

    def coupled(x, a, b):
        seen.append(x.shape)
        return a * (x - x.mean()) + b

    def pointwise(x, a, b):
        seen.append(x.shape)
        return a * jnp.exp(-b * x)

    def lengths():  # those of real data (the proof traces a symbolic one)
        out = {s for s in seen if all(isinstance(d, int) for d in s)}
        seen.clear()
        return out

    x = np.linspace(0, 10, 21)
    jaxfit.curve_fit(coupled, x, 2 * (x - 5) + 1)
    assert lengths() == {(21,)}  # the exact length, never a padded one
    jaxfit.curve_fit(pointwise, x, 2 * np.exp(-0.3 * x))
    assert lengths() == {(21,), (22,)}  # traced once, then padded to its bucket
    seen.clear()
    jaxfit.curve_fit(pointwise, x, 3 * np.exp(-0.2 * x))
    jaxfit.curve_fit(coupled, x, 3 * (x - 5) + 2)
    assert seen == []  # a repeated call neither traces nor evaluates the model


def test_repeated_call_compiles_nothing(count_compilations):
    x = np.linspace(0, 10, 21)
    coupled = lambda x, a, b: a * (x - x.mean()) + b
    for f, y in ((decay(jnp), Y), (coupled, 3 * (x - 5) + 2)):
        xs = X if y is Y else x
        jaxfit.curve_fit(f, xs, y, p0=[1.0, 1.0, 0.0][: 3 if y is Y else 2])
        with count_compilations() as counter:
            jaxfit.curve_fit(f, xs, y + 0.1, p0=[1.0, 1.0, 0.0][: 3 if y is Y else 2])
        assert counter.count == 0


# 2. What SciPy accepts.


def test_scalar_sigma_matches_scipy():
    for absolute_sigma in (False, True):
        kw = dict(p0=[1.0, 1.0, 0.0], sigma=0.05, absolute_sigma=absolute_sigma)
        ours, ref = _both(decay(jnp), decay(np), X, Y, **kw)
        _assert_fits_close(ours, ref)


def test_xdata_none_is_passed_to_the_model():
    t = X
    f = lambda x, a, k, c: a * jnp.exp(-k * t) + c + 0 * (x is None)
    g = lambda x, a, k, c: a * np.exp(-k * t) + c
    ours, ref = _both(f, g, None, Y, p0=[1.0, 1.0, 0.0])
    _assert_fits_close(ours, ref)


def test_ydata_broadcasts_against_the_model_output_as_in_scipy():
    level = lambda x, c: c * jnp.ones(())  # a scalar model, 1-D data
    ours = jaxfit.curve_fit(level, X, Y)
    ref = so.curve_fit(lambda x, c: c, X, Y)
    _assert_fits_close(ours, ref)
    line = lambda x, a, b: a * x + b  # 1-D model, scalar data
    ours, ref = _both(line, line, X, 3.0)
    np.testing.assert_allclose(ours[0] @ [1.0, 0.0], 0.0, atol=1e-9)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-7)


def test_bounds_object_and_maxfev_zero_match_scipy():
    bounds = so.Bounds([0.0, 0.0, 0.0], [10.0, 5.0, 5.0])
    ours, ref = _both(decay(jnp), decay(np), X, Y, p0=[1.0, 1.0, 0.1], bounds=bounds)
    _assert_fits_close(ours, ref, rtol=1e-5)
    ours, ref = _both(decay(jnp), decay(np), X, Y, p0=[1.0, 1.0, 0.0], maxfev=0)
    _assert_fits_close(ours, ref)


def test_nan_policy_omit_drops_rows_and_columns_of_a_2d_sigma():
    y = Y.copy()
    y[[3, 17]] = np.nan
    i = np.arange(X.size)
    cov = 1e-4 * (1 + X[:, None] / 4) * 0.5 ** np.abs(i[:, None] - i[None, :])
    kw = dict(p0=[1.0, 1.0, 0.0], sigma=cov, nan_policy="omit")
    ours, ref = _both(decay(jnp), decay(np), X, y, **kw)
    _assert_fits_close(ours, ref)
    x = X.copy()
    x[5] = np.nan  # a NaN in xdata drops the point too
    ours, ref = _both(decay(jnp), decay(np), x, y, **kw)
    _assert_fits_close(ours, ref)


def test_nan_policy_propagate_is_refused_as_in_scipy():
    text = "`nan_policy='propagate'` is not supported by this function."
    for fit, f in ((jaxfit.curve_fit, decay(jnp)), (so.curve_fit, decay(np))):
        with pytest.raises(ValueError, match=re.escape(text)):
            fit(f, X, Y, p0=[1.0, 1.0, 0.0], nan_policy="propagate")
    # With check_finite=True SciPy ignores the policy; so does jaxfit.
    kw = dict(p0=[1, 1, 0], nan_policy="propagate", check_finite=True)
    ours, ref = _both(decay(jnp), decay(np), X, Y, **kw)
    _assert_fits_close(ours, ref)


def test_rank_deficient_covariance_follows_the_method():
    # Only a + b is determined. With an exact J = [x, x], SciPy's trf gives
    # the pseudo-inverse of J^T J; its lm inverts MINPACK's R, which gives
    # inf (with a warning) or, rounded, ~1e25: jaxfit's lm gives inf.
    y = 2 * X + 0.01 * np.sin(5 * X)
    f = lambda x, a, b: (a + b) * x
    ours_kw = dict(p0=[1.0, 0.0], jac=lambda x, a, b: jnp.stack([x, x], 1))
    ref_kw = dict(p0=[1.0, 0.0], jac=lambda x, a, b: np.stack([x, x], 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", so.OptimizeWarning)
        ours = jaxfit.curve_fit(f, X, y, method="trf", **ours_kw)
        ref = so.curve_fit(f, X, y, method="trf", **ref_kw)
    assert not caught
    np.testing.assert_allclose(ours[0].sum(), ref[0].sum(), rtol=1e-7)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6)
    with pytest.warns(so.OptimizeWarning, match="Covariance"):
        ours = jaxfit.curve_fit(f, X, y, method="lm", **ours_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", so.OptimizeWarning)
        ref = so.curve_fit(f, X, y, method="lm", **ref_kw)
    assert np.all(np.isinf(ours[1])) and np.all(np.abs(ref[1]) > 1e15)


# 3. SciPy's full_output; the richer result under return_result.


@pytest.mark.parametrize("method", [None, "trf"])
def test_full_output_is_scipys_five_tuple(method):
    kw = dict(p0=[1.0, 1.0, 0.0], method=method, full_output=True)
    (popt, pcov, info, mesg, ier), ref = _both(decay(jnp), decay(np), X, Y, **kw)
    _assert_fits_close((popt, pcov), ref)
    assert ier in (1, 2, 3, 4) and isinstance(mesg, str) and mesg
    assert {"nfev", "fvec"} <= set(info) and info["nfev"] >= 1
    np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], atol=1e-8)
    np.testing.assert_allclose(info["fvec"], decay(np)(X, *popt) - Y, atol=1e-12)
    np.testing.assert_allclose(info["cost"], 0.5 * np.sum(info["fvec"] ** 2))
    assert info["jac"].shape == (X.size, 3)


def test_return_result_gives_the_curve_fit_result():
    res = jaxfit.curve_fit(decay(jnp), X, Y, p0=[1.0, 1.0, 0.0], return_result=True)
    assert isinstance(res, jaxfit.CurveFitResult) and res.success
    np.testing.assert_allclose(res.perr, np.sqrt(np.diag(res.pcov)))
    with pytest.raises(ValueError, match="`return_result=True`"):
        jaxfit.curve_fit(decay(jnp), X, Y, full_output=True, return_result=True)


# 4. SciPy's exception types and texts.

_LINE = (lambda x, a, b: a * x + b, lambda x, a, b: a * x + b)
_NAN_Y = np.where(np.arange(X.size) == 3, np.nan, Y)
ERRORS = {
    "fewer points than parameters": (
        dict(xdata=X[:2], ydata=Y[:2], p0=[1.0, 1.0, 0.0]),
        TypeError,
        "The number of func parameters=3 must not exceed the number of data points=2",
    ),
    "p0 outside bounds": (
        dict(p0=[1.0, 9.0, 0.0], bounds=(0, 5)),
        ValueError,
        "Initial guess is outside of provided bounds",
    ),
    "lm with bounds": (
        dict(p0=[1.0, 1.0, 0.0], bounds=(0, 5), method="lm"),
        ValueError,
        "Method 'lm' only works for unconstrained problems. "
        "Use 'trf' or 'dogbox' instead.",
    ),
    "reversed bounds": (
        dict(p0=[1.0, 1.0, 0.0], bounds=(5, 0)),
        ValueError,
        "Each lower bound must be strictly less than each upper bound.",
    ),
    "bad nan_policy": (
        dict(p0=[1.0, 1.0, 0.0], nan_policy="drop"),
        ValueError,
        "nan_policy must be one of {None, 'raise', 'omit'}",
    ),
    "nan_policy raise": (
        dict(ydata=_NAN_Y, p0=[1.0, 1.0, 0.0], nan_policy="raise"),
        ValueError,
        "The input contains nan values",
    ),
    "check_finite": (
        dict(ydata=_NAN_Y, p0=[1.0, 1.0, 0.0]),
        ValueError,
        "array must not contain infs or NaNs",
    ),
    "empty ydata": (
        dict(xdata=[], ydata=[], p0=[1.0, 1.0, 0.0]),
        ValueError,
        "`ydata` must not be empty!",
    ),
    "bad method": (
        dict(p0=[1.0, 1.0, 0.0], method="newton"),
        ValueError,
        "`method` must be 'trf', 'dogbox' or 'lm'.",
    ),
    "bad jac": (
        dict(p0=[1.0, 1.0, 0.0], method="trf", jac="5-point"),
        ValueError,
        "`jac` must be '2-point', '3-point', 'cs' or callable.",
    ),
    "bad loss": (
        dict(p0=[1.0, 1.0, 0.0], method="trf", loss="l1"),
        ValueError,
        "`loss` must be one of dict_keys(['linear', 'huber', 'soft_l1', "
        "'cauchy', 'arctan']) or a callable.",
    ),
    "sigma shape": (
        dict(p0=[1.0, 1.0, 0.0], sigma=np.ones(3)),
        ValueError,
        "`sigma` has incorrect shape.",
    ),
    "sigma not positive definite": (
        dict(p0=[1.0, 1.0, 0.0], sigma=-np.eye(X.size)),
        ValueError,
        "`sigma` must be positive definite.",
    ),
    "args": (
        dict(p0=[1.0, 1.0, 0.0], args=(1,)),
        ValueError,
        "'args' is not a supported keyword argument.",
    ),
    "max_nfev zero": (
        dict(p0=[1.0, 1.0, 0.0], method="trf", max_nfev=0),
        ValueError,
        "`max_nfev` must be None or positive integer.",
    ),
    "unknown keyword": (
        dict(p0=[1.0, 1.0, 0.0], tol=1e-3),
        TypeError,
        "got an unexpected keyword argument 'tol'",
    ),
    "not finite at p0": (
        dict(p0=[1.0, -1e3, 0.0], method="trf"),  # exp(1e3 x) overflows
        ValueError,
        "Residuals are not finite in the initial point.",
    ),
    "not converged": (
        dict(p0=[1.0, 0.01, 0.0], method="trf", max_nfev=2),
        RuntimeError,
        "Optimal parameters not found: "
        "The maximum number of function evaluations is exceeded.",
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_have_scipys_type_and_text(case):
    kwargs, kind, text = ERRORS[case]
    kwargs = {"xdata": X, "ydata": Y, **kwargs}
    for fit, f in ((so.curve_fit, decay(np)), (jaxfit.curve_fit, decay(jnp))):
        with pytest.raises(kind, match=re.escape(text)), np.errstate(all="ignore"):
            fit(f, **kwargs)


def test_unknown_parameter_count_has_scipys_text():
    text = "Unable to determine number of fit parameters."
    for fit in (so.curve_fit, jaxfit.curve_fit):
        with pytest.raises(ValueError, match=re.escape(text)):
            fit(lambda *args: args[0], X, Y)


# 5. Models JAX cannot trace are fitted by SciPy on the host.


def _numpy_if(x, a, k, c):
    if a > 0:  # Python logic on a parameter value
        return a * np.exp(-k * x) + c
    return c + 0 * x


def _math_scale(x, a, k, c):
    return a * math.exp(-k) * np.exp(-k * (x - 1)) + c


@pytest.mark.parametrize("model", [decay(np), _numpy_if, _math_scale])
@pytest.mark.parametrize("bounds", [(-np.inf, np.inf), (0, 10)])
def test_untraceable_model_is_fitted_by_scipy_with_one_warning(model, bounds):
    kw = dict(p0=[1.0, 1.0, 0.0], bounds=bounds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popt, pcov = jaxfit.curve_fit(model, X, Y, **kw)
    slow = [w for w in caught if issubclass(w.category, jaxfit.SlowPathWarning)]
    assert len(slow) == 1 and "jax.numpy" in str(slow[0].message)
    assert slow[0].filename == __file__  # points at the user's call
    ref_popt, ref_pcov = so.curve_fit(model, X, Y, **kw)
    np.testing.assert_array_equal(popt, ref_popt)
    np.testing.assert_array_equal(pcov, ref_pcov)


def test_untraceable_model_with_jaxfit_options():
    kw = dict(p0=[1.0, 1.0, 0.0])
    with pytest.warns(jaxfit.SlowPathWarning):
        res = jaxfit.curve_fit(decay(np), X, Y, return_result=True, maxfev=500, **kw)
        robust = jaxfit.curve_fit(decay(np), X, Y, loss="soft_l1", f_scale=0.1, **kw)
        full = jaxfit.curve_fit(decay(np), X, Y, full_output=True, **kw)
    ref = so.curve_fit(decay(np), X, Y, full_output=True, maxfev=500, **kw)
    np.testing.assert_array_equal(res.popt, ref[0])
    assert res.success and res.nfev == ref[2]["nfev"] and res.jac is None
    np.testing.assert_allclose(res.cost, 0.5 * np.sum(ref[2]["fvec"] ** 2))
    ref = so.curve_fit(decay(np), X, Y, method="trf", loss="soft_l1", f_scale=0.1, **kw)
    np.testing.assert_array_equal(robust[0], ref[0])
    assert len(full) == 5 and full[4] in (1, 2, 3, 4)
    with (
        pytest.raises(ValueError, match="`init_damping`"),
        pytest.warns(jaxfit.SlowPathWarning),
    ):
        jaxfit.curve_fit(decay(np), X, Y, init_damping=1e-2, **kw)


def test_numpy_jacobian_for_a_jax_model_falls_back_too():
    jac = lambda x, a, k, c: np.stack(
        [np.exp(-k * x), -a * x * np.exp(-k * x), np.ones_like(x)], 1
    )
    with pytest.warns(jaxfit.SlowPathWarning, match="`jac`"):
        popt, _ = jaxfit.curve_fit(decay(jnp), X, Y, p0=[1.0, 1.0, 0.0], jac=jac)
    ref, _ = so.curve_fit(decay(np), X, Y, p0=[1.0, 1.0, 0.0], jac=jac)
    np.testing.assert_allclose(popt, ref, rtol=1e-12)


@pytest.mark.parametrize(
    "model, kind",
    [
        (lambda x, a, b: a * x + undefined_name * b, NameError),  # noqa: F821
        (lambda x, a, b: a * x + jnp.ones(3) * b, TypeError),  # shapes
        (lambda x, a, b: jnp.exp(x, a) + b, TypeError),  # wrong arguments
    ],
)
def test_genuine_errors_in_a_jax_model_propagate_without_fallback(model, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxfit.SlowPathWarning)
        with pytest.raises(kind):
            jaxfit.curve_fit(model, X, Y)


# 6. Unhashable callables, held weakly.


@dataclasses.dataclass
class Decay:
    """A model object: eq=True makes it unhashable (``__hash__`` is None)."""

    xp: object

    def __call__(self, x, a, k, c):
        return a * self.xp.exp(-k * x) + c


@dataclasses.dataclass
class DecayJac:
    xp: object

    def __call__(self, x, a, k, c):
        e = self.xp.exp(-k * x)
        return self.xp.stack([e, -a * x * e, self.xp.ones_like(x)], 1)


def test_unhashable_model_and_jac_are_accepted():
    assert Decay.__hash__ is None
    p0 = [1.0, 1.0, 0.0]
    ours, ref = _both(Decay(jnp), Decay(np), X, Y, p0=p0)
    _assert_fits_close(ours, ref)
    ours = jaxfit.curve_fit(Decay(jnp), X, Y, p0=p0, jac=DecayJac(jnp))
    ref = so.curve_fit(Decay(np), X, Y, p0=p0, jac=DecayJac(np))
    _assert_fits_close(ours, ref)


def test_solve_many_accepts_unhashable_residual_and_jac():
    @dataclasses.dataclass
    class Residual:
        def __call__(self, p, b):
            return Decay(jnp)(b["x"], *p) - b["y"]

    @dataclasses.dataclass
    class Jac:
        def __call__(self, p, b):
            return DecayJac(jnp)(b["x"], *p)

    ys = np.stack([Y, 2 * Y])
    xs = np.stack([X, X])
    with jax.enable_x64(True):
        sol = jaxfit.least_squares_solve_many(
            Residual(), np.ones((2, 3)), {"x": xs, "y": ys}, jac=Jac()
        )
    for i in range(2):
        ref, _ = so.curve_fit(decay(np), X, ys[i], p0=[1.0, 1.0, 0.0])
        np.testing.assert_allclose(sol.params[i], ref, rtol=1e-6)


def _model_closing_over_an_array():
    offset = np.zeros(X.size)  # what the model closes over must go with it

    def model(x, a, k, c):
        return a * jnp.exp(-k * x) + c + offset

    return model, weakref.ref(offset)


def test_dropped_model_is_garbage_collected_with_its_program():
    model, offset = _model_closing_over_an_array()
    unhashable = Decay(jnp)
    refs = [weakref.ref(model), offset, weakref.ref(unhashable)]
    jaxfit.curve_fit(model, X, Y, p0=[1.0, 1.0, 0.0])
    jaxfit.curve_fit(unhashable, X, Y, p0=[1.0, 1.0, 0.0], return_result=True)
    del model, unhashable
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
