"""A pure JAX function as a flat list of primitive applications, and its evaluation with probes.

``trace(fn, leaves, x)`` runs ``jax.make_jaxpr`` and inlines every call (``jit``,
``custom_jvp_call``, ``custom_vjp_call``, remat, ...) except *atomic element-wise* calls (one
array in, one array of the same shape out, only element-wise primitives inside: e.g.
``jax.nn.relu``, ``jax.nn.gelu``), which stay single equations and keep their custom
derivative rules. Values are integer ids; literals and closed-over constants are :class:`Lit`.

``evaluate(program, leaves, x, sites, probes)`` re-binds the same primitives (traceable: works
under ``jit``, ``grad``, ``vmap``) and, at each site ``name -> (z id, h id)``, adds
``probes[name]`` to ``h`` and records ``h`` and ``z``. Cost: one forward pass.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import jax
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

# Primitives that act entry by entry on operands of one shape (scalars broadcast).
ELEMENTWISE = frozenset("""
abs add sub mul div neg max min exp exp2 log log1p expm1 tanh logistic erf erfc erf_inv sin cos
tan asin acos atan atan2 sinh cosh asinh acosh atanh sqrt rsqrt cbrt integer_pow pow square sign
select_n gt ge lt le eq ne convert_element_type copy copy_p and or not xor floor ceil round clamp
is_finite nextafter rem reduce_precision lgamma digamma stop_gradient
""".split())

_CALL_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class Lit(NamedTuple):
    """A literal or closed-over constant."""

    val: Any


class Eqn(NamedTuple):
    prim: Any
    params: dict
    ins: tuple  # ids (int) or Lit
    outs: tuple  # ids
    ctx: Any


class Program(NamedTuple):
    eqns: tuple
    invars: tuple
    outvars: tuple
    avals: dict  # id -> (shape tuple, dtype)


def _sub(eqn):
    """(jaxpr, consts) of a call-like equation, else None."""
    for key in _CALL_KEYS:
        j = eqn.params.get(key)
        if isinstance(j, ClosedJaxpr):
            return j.jaxpr, j.consts
        if isinstance(j, Jaxpr):
            return j, []
    return None


def _is_scalar(atom) -> bool:
    return isinstance(atom, Literal) or tuple(atom.aval.shape) == ()


def _elementwise_jaxpr(jaxpr) -> bool:
    for e in jaxpr.eqns:
        if e.primitive.name in ELEMENTWISE or e.primitive.name == "broadcast_in_dim":
            continue
        sub = _sub(e)
        if sub is None or not _elementwise_jaxpr(sub[0]):
            return False
    return True


def is_atomic(eqn, sub) -> bool:
    """True for a call with one array input (others scalars), one output of its shape and only
    element-wise work inside."""
    if len(eqn.outvars) != 1:
        return False
    shape = tuple(eqn.outvars[0].aval.shape)
    arrays = [a for a in eqn.invars if not _is_scalar(a)]
    return (len(arrays) == 1 and tuple(arrays[0].aval.shape) == shape
            and _elementwise_jaxpr(sub[0]))


def trace(fn, leaves, x) -> Program:
    """Flat :class:`Program` of ``fn(leaves, x)`` (leaves: list of arrays)."""
    closed = jax.make_jaxpr(fn)(leaves, x)
    ids = itertools.count()
    eqns, avals = [], {}

    def new(v):
        i = next(ids)
        avals[i] = (tuple(v.aval.shape), v.aval.dtype)
        return i

    def inline(jaxpr, consts, in_atoms):
        env = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = Lit(c)
        for v, a in zip(jaxpr.invars, in_atoms):
            env[v] = a

        def read(a):
            return Lit(a.val) if isinstance(a, Literal) else env[a]

        for e in jaxpr.eqns:
            ins = tuple(read(a) for a in e.invars)
            sub = _sub(e)
            if sub is not None and not is_atomic(e, sub):
                for v, o in zip(e.outvars, inline(sub[0], sub[1], ins)):
                    env[v] = o
                continue
            outs = []
            for v in e.outvars:
                env[v] = new(v)
                outs.append(env[v])
            eqns.append(Eqn(e.primitive, e.params, ins, tuple(outs), e.ctx))
        return [read(a) for a in jaxpr.outvars]

    invars = []
    for v in closed.jaxpr.invars:
        invars.append(new(v))
    outvars = inline(closed.jaxpr, closed.consts, invars)
    return Program(tuple(eqns), tuple(invars), tuple(outvars), avals)


def evaluate(program: Program, leaves, x, sites: dict, probes=None):
    """(outputs list, activations {name: h + probe}, preactivations {name: z})."""
    env = dict(zip(program.invars, [*leaves, x]))
    at_h = {h: (name, z) for name, (z, h) in sites.items()}
    acts, pre = {}, {}

    def read(a):
        return a.val if isinstance(a, Lit) else env[a]

    for e in program.eqns:
        with e.ctx.manager:
            ans = e.prim.bind(*[read(a) for a in e.ins], **e.prim.get_bind_params(e.params))
        outs = ans if e.prim.multiple_results else [ans]
        for i, val in zip(e.outs, outs):
            if i in at_h:
                name, z = at_h[i]
                if probes is not None and name in probes:
                    val = val + probes[name]
                acts[name], pre[name] = val, env[z]
            env[i] = val
    return [read(a) for a in program.outvars], acts, pre


def evaluate_ids(program: Program, env: dict, targets) -> list:
    """Values of ``targets`` computing only the equations they need, given the known ``env``
    ({id: value}; ids in it are not recomputed). Used to run one activation's element-wise
    chain on its own (cost: the equations between ``env`` and ``targets``)."""
    producer = {o: k for k, e in enumerate(program.eqns) for o in e.outs}
    need, stack = set(), [t for t in targets if t not in env]
    while stack:
        k = producer[stack.pop()]
        if k in need:
            continue
        need.add(k)
        stack += [a for a in program.eqns[k].ins if not isinstance(a, Lit) and a not in env]
    env = dict(env)
    for k in sorted(need):
        e = program.eqns[k]
        ins = [a.val if isinstance(a, Lit) else env[a] for a in e.ins]
        with e.ctx.manager:
            ans = e.prim.bind(*ins, **e.prim.get_bind_params(e.params))
        for i, val in zip(e.outs, ans if e.prim.multiple_results else [ans]):
            env[i] = val
    return [env[t] for t in targets]


__all__ = ["ELEMENTWISE", "Eqn", "Lit", "Program", "evaluate", "evaluate_ids", "is_atomic",
           "trace"]
