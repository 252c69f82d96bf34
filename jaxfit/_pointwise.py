"""Whether a model is pointwise: the proof behind ``curve_fit``'s padding.

``curve_fit`` pads the data to a size bucket (one compiled program serves
many lengths) and splits large fits into row blocks. Both change what the
model sees, so both are only allowed for a model shown to be *pointwise*:
output row ``j`` depends on input point ``j`` alone, through a function
that is the same for every ``j`` and every length. A numerical probe cannot
show this (``x - x.mean()`` passes a probe on evenly spaced halves), so the
model is traced once with the number of points symbolic and the program is
read: a model that uses the length (``len(x)``, ``x.mean()``, a closed-over
array of the data's length, positions from ``arange``) either fails to
trace symbolically or mixes points in a way an equation below rejects.
Anything not understood counts as not pointwise: the fit is then compiled
for the exact length, which is always correct.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.extend as jex
import numpy as np
from jax import export

# The symbolic number of points; its name also marks parameters that use it.
_NAME = "jaxfit_points"

# A value is FREE (independent of x and, along every axis of the symbolic
# length, constant), BAD, or the int axis along which it carries the points.
FREE = "free"
BAD = "bad"

_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh bessel_i0e bessel_i1e
    cbrt ceil clamp clz complex conj convert_element_type copy copy_p cos cosh
    digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma igammac
    imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne
    neg nextafter not or polygamma polynomial population_count pow real
    reduce_precision regularized_incomplete_beta rem round rsqrt select_n shift_left
    shift_right_arithmetic shift_right_logical sign sin sinh sqrt square sub
    tan tanh xor zeta""".split()
)
_REDUCTIONS = frozenset(
    """reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or
    reduce_xor argmax argmin""".split()
)
_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())
_CALLS = frozenset(
    """pjit jit closed_call core_call custom_jvp_call custom_vjp_call
    checkpoint remat remat2""".split()
)


def is_pointwise(fn, x, args, out_ndim: int = 1) -> bool:
    """Whether ``fn(x, *args)`` is pointwise along ``x``'s last axis.

    The output must have ``out_ndim`` dimensions, the first being the points
    (a model: ``(m,)``; a Jacobian: ``(m, n)``). ``x`` is an array (or its
    shape and dtype); ``args`` are arrays or shape-dtype structs.
    """
    (points,) = export.symbolic_shape(_NAME)
    spec = jax.ShapeDtypeStruct((*np.shape(x)[:-1], points), x.dtype)
    abstract = [jax.ShapeDtypeStruct(np.shape(a), np.result_type(a)) for a in args]
    try:
        closed = jax.make_jaxpr(fn)(spec, *abstract)
    except Exception:  # uses the length as a number, or a fixed-length array
        return False
    if len(closed.out_avals) != 1:
        return False
    shape = closed.out_avals[0].shape
    if len(shape) != out_ndim or not _is_points(shape[0]) or _symbolic(shape[1:]):
        return False
    ins = [len(spec.shape) - 1] + [FREE] * len(args)
    (out,) = _run(closed.jaxpr, ins)
    return out in (0, FREE)


def _is_points(d) -> bool:
    return not isinstance(d, int) and str(d) == _NAME


def _symbolic(shape) -> bool:
    return any(not isinstance(d, int) for d in shape)


def _shape(v) -> tuple:
    return tuple(getattr(v.aval, "shape", ()))


def _join(a, b):
    """The state of a value that may be either (control flow)."""
    if a == b or b == FREE:
        return a
    return b if a == FREE else BAD


def _run(jaxpr, ins) -> list:
    env: dict = {}
    read = lambda v: FREE if isinstance(v, jex.core.Literal) else env[v]
    for v in jaxpr.constvars:
        env[v] = FREE  # concrete constants: no symbolic axis
    for v, s in zip(jaxpr.invars, ins, strict=True):
        env[v] = s
    for eqn in jaxpr.eqns:
        states = [read(v) for v in eqn.invars]
        if BAD in states:
            outs = [BAD] * len(eqn.outvars)
        else:
            outs = _equation(eqn, states)
        for v, s in zip(eqn.outvars, outs, strict=True):
            env[v] = s
    return [read(v) for v in jaxpr.outvars]


def _equation(eqn, states) -> list:
    name, p = eqn.primitive.name, eqn.params
    n_out = len(eqn.outvars)
    in_shapes = [_shape(v) for v in eqn.invars]
    out_shapes = [_shape(v) for v in eqn.outvars]
    axes = {s for s in states if s != FREE}
    if name in _ELEMENTWISE:
        # Equal shapes (or scalars): FREE operands are constant along the
        # points, so each output point sees its own input point only.
        if len(axes) > 1 or any(s and s != out_shapes[0] for s in in_shapes):
            return [BAD]
        return [axes.pop() if axes else FREE]
    if name in _CALLS:
        return _call(eqn, states)
    if name == "cond":
        return _cond(eqn, states)
    if name == "while":
        return _while(eqn, states)
    if name == "scan":
        return _scan(eqn, states)
    rule = _SHAPE_RULES.get(name)
    if rule is not None:
        return [rule(eqn, states, in_shapes, out_shapes)] * n_out
    # Anything else is safe only away from the points (parameters, constants).
    if (
        not axes
        and not any(_symbolic(s) for s in in_shapes + out_shapes)
        and _NAME not in str(p)
    ):
        return [FREE] * n_out
    return [BAD] * n_out


def _broadcast_in_dim(eqn, states, in_shapes, out_shapes):
    (s, *dynamic) = states
    if dynamic:
        return BAD
    if s == FREE:
        return FREE  # new axes are constant along themselves
    dims = eqn.params["broadcast_dimensions"]
    if not _is_points(out_shapes[0][dims[s]]):
        return BAD
    return dims[s]


def _squeeze(eqn, states, in_shapes, out_shapes):
    (s,) = states
    if s == FREE:
        return FREE
    return s - sum(d < s for d in eqn.params["dimensions"])


def _reshape(eqn, states, in_shapes, out_shapes):
    # Only inserting or removing unit axes keeps the points where they are.
    (s, *dynamic) = states
    if dynamic or eqn.params.get("dimensions") is not None:
        return BAD
    big_in = [i for i, d in enumerate(in_shapes[0]) if d != 1]
    big_out = [i for i, d in enumerate(out_shapes[0]) if d != 1]
    sizes_in = [str(in_shapes[0][i]) for i in big_in]
    if sizes_in != [str(out_shapes[0][i]) for i in big_out]:
        return BAD
    return s if s == FREE else big_out[big_in.index(s)]


def _transpose(eqn, states, in_shapes, out_shapes):
    (s,) = states
    return s if s == FREE else list(eqn.params["permutation"]).index(s)


def _whole_symbolic_axes(shape, starts, limits, strides):
    for d, a, b, k in zip(
        shape, starts, limits, strides or [1] * len(shape), strict=True
    ):
        if not isinstance(d, int) and not (a == 0 and str(b) == str(d) and k == 1):
            return False
    return True


def _slice(eqn, states, in_shapes, out_shapes):
    (s,) = states
    p = eqn.params
    ok = _whole_symbolic_axes(
        in_shapes[0], p["start_indices"], p["limit_indices"], p["strides"]
    )
    return s if ok else BAD


def _gather(eqn, states, in_shapes, out_shapes):
    # x[0] of an (k, m) x: a gather on other axes, the points taken whole.
    s, index = states
    dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    if index != FREE or _symbolic(in_shapes[1]) or dn.operand_batching_dims:
        return BAD
    shape = in_shapes[0]
    for axis, d in enumerate(shape):
        if isinstance(d, int):
            continue
        if axis in dn.start_index_map or str(sizes[axis]) != str(d):
            return BAD
    if s == FREE:
        return FREE
    kept = [a for a in range(len(shape)) if a not in dn.collapsed_slice_dims]
    return dn.offset_dims[kept.index(s)]


def _concatenate(eqn, states, in_shapes, out_shapes):
    axes = {s for s in states if s != FREE}
    if len(axes) > 1 or _symbolic([out_shapes[0][eqn.params["dimension"]]]):
        return BAD
    return axes.pop() if axes else FREE


def _stack(eqn, states, in_shapes, out_shapes):
    axes = {s for s in states if s != FREE}
    if len(axes) > 1:
        return BAD
    if not axes:
        return FREE
    s, axis = axes.pop(), eqn.params["axis"]
    return s + (s >= axis)


def _reduce(eqn, states, in_shapes, out_shapes):
    (s,) = states
    axes = eqn.params["axes"]
    # Summing along the points (or copies of a value along them) uses m.
    if _symbolic([in_shapes[0][a] for a in axes]):
        return BAD
    return s if s == FREE else s - sum(a < s for a in axes)


def _cumulative(eqn, states, in_shapes, out_shapes):
    (s,) = states
    return BAD if _symbolic([in_shapes[0][eqn.params["axis"]]]) else s


def _iota(eqn, states, in_shapes, out_shapes):
    # Positions along the points differ from point to point.
    return BAD if _symbolic([out_shapes[0][eqn.params["dimension"]]]) else FREE


def _dot_general(eqn, states, in_shapes, out_shapes):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    for shape, contract in zip(in_shapes, (lc, rc), strict=True):
        if _symbolic([shape[a] for a in contract]):
            return BAD
    free = [
        [a for a in range(len(shape)) if a not in c and a not in b]
        for shape, c, b in zip(in_shapes, (lc, rc), (lb, rb), strict=True)
    ]
    out = set()
    for side, s in enumerate(states):
        if s == FREE:
            continue
        batch = (lb, rb)[side]
        if s in batch:
            out.add(list(batch).index(s))
        else:
            out.add(len(lb) + (len(free[0]) if side else 0) + free[side].index(s))
    if len(out) > 1:
        return BAD
    return out.pop() if out else FREE


_SHAPE_RULES = {
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": _squeeze,
    "reshape": _reshape,
    "transpose": _transpose,
    "slice": _slice,
    "gather": _gather,
    "concatenate": _concatenate,
    "stack": _stack,
    "iota": _iota,
    "dot_general": _dot_general,
    **dict.fromkeys(_REDUCTIONS, _reduce),
    **dict.fromkeys(_CUMULATIVE, _cumulative),
}


def _open(jaxpr: Any):
    """The open jaxpr of a closed or open jaxpr parameter."""
    return getattr(jaxpr, "jaxpr", jaxpr)


def _call(eqn, states):
    p = eqn.params
    inner = p.get("jaxpr", p.get("call_jaxpr"))
    if inner is None:
        return [BAD] * len(eqn.outvars)
    jaxpr = _open(inner)
    if len(jaxpr.invars) != len(states):
        return [BAD] * len(eqn.outvars)
    return _run(jaxpr, states)


def _cond(eqn, states):
    index, *operands = states
    outs = None
    for branch in eqn.params["branches"]:
        got = _run(_open(branch), operands)
        outs = (
            got
            if outs is None
            else [_join(a, b) for a, b in zip(outs, got, strict=True)]
        )
    return outs if index == FREE else [BAD] * len(outs)


def _loop(body, consts, carry, xs=(), rounds=4):
    """Carry states at the body's fixed point, and the body's other outputs."""
    for _ in range(rounds):
        outs = _run(_open(body), [*consts, *carry, *xs])
        new = [_join(a, b) for a, b in zip(carry, outs[: len(carry)], strict=True)]
        if new == carry:
            return carry, outs[len(carry) :]
        carry = new
    return [BAD] * len(carry), [BAD] * (len(outs) - len(carry))


def _while(eqn, states):
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts = states[:nc], states[nc : nc + nb]
    carry = states[nc + nb :]
    carry, _ = _loop(p["body_jaxpr"], body_consts, carry)
    (go,) = _run(_open(p["cond_jaxpr"]), [*cond_consts, *carry])
    return carry if go == FREE else [BAD] * len(carry)


def _scan(eqn, states):
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, carry, xs = states[:nc], states[nc : nc + nk], states[nc + nk :]
    if not isinstance(p["length"], int) or 0 in xs:  # a loop over the points
        return [BAD] * len(eqn.outvars)
    xs = [s if s == FREE else s - 1 for s in xs]
    carry, ys = _loop(p["jaxpr"], consts, carry, xs)
    return carry + [s if s in (FREE, BAD) else s + 1 for s in ys]
