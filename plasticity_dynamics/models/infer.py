"""Unit layout inference from the jaxpr of any pure JAX network.

``infer_layout(program, paths, x_index)`` walks the flat :class:`~.jaxpr_program.Program` of
``apply(params, x)`` once, labelling every axis of every value:

- axes of values computed from ``x`` (data) carry a label: the batch axis, a *unit* axis of a
  group (``outer`` copies for an NHWC flatten, unit fastest), a head / within-head axis
  (``(B, T, D) -> (B, T, heads, hd)``), or nothing (pixels, spatial positions, tokens);
- axes of values computed from parameters only carry the set of (leaf, axis) they come from
  (through transposes, broadcasts, reshapes, element-wise maps, reductions).

Rules. ``dot_general`` / ``conv_general_dilated`` of data with a parameter: the parameter's
contracted axis is an "in" axis of the data axis's group; its one free (output-feature) axis
starts a new group ("out"). Element-wise ops of data with a parameter (bias, norm scale and
offset, running mean and variance) make the aligned parameter axis an "out" axis of the data
axis's group. Element-wise ops of two data values with unit axes (residual adds) and
contractions of two data values (attention q.k, weights.v) merge groups. A flatten is allowed
when the unit axis is the fastest (NHWC); a split of a unit axis into (heads, hd) marks heads.

Activation sites: a data value z whose first axis is the batch axis and whose last axis is a
plain unit axis, followed by a chain of element-wise operations that use only z and
constants, contains a non-linear primitive and has one exit h of z's shape (not reduced over
the batch or unit axis) -- the pre-activation and activation of one layer. Incoming
parameters of the layer: "out" axes of its group met walking back from z to the previous
activations; outgoing weights: kernels' "in" axes reached from h through zero-preserving
operations (reshape, pooling, dropout, ...; a norm or residual add in between stops it).

Anything else that touches a unit axis raises one InputError naming the primitive and the
parameter path, pointing to a declared :class:`~.layout.Layout`.
Cost: O(number of equations) Python work per trace, plus O(equations) per activation site.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from ..errors import InputError
from .jaxpr_program import ELEMENTWISE, Lit, Program, _sub
from .layout import LayerSpec, Layout

BATCH = ("B",)
_LINEAR_UNARY = frozenset({"neg", "convert_element_type", "copy", "copy_p", "reduce_precision",
                           "stop_gradient"})
_ZERO_KEEP = frozenset({"reshape", "transpose", "broadcast_in_dim", "squeeze", "reduce_window_max",
                        "reduce_window_sum", "reduce_sum", "convert_element_type", "copy",
                        "copy_p", "slice", "reduce_precision", "mul", "div", "select_n"})
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                     "reduce_or", "argmax", "argmin"})
_KINDS = {2: "dense", 3: "tokens", 4: "conv"}
def _unit(lb) -> bool:
    """A unit, head or within-head axis label (not batch, not a pending parameter axis)."""
    return lb is not None and lb[0] in ("U", "H", "D")


_HINT = "; declare it instead: pdx.models.from_function(..., layout=pdx.models.Layout(...))"


class _Inference:
    def __init__(self, program: Program, paths: list, x_index: int):
        self.p = program
        self.paths = paths  # leaf index -> path tuple (collection first)
        self.parent, self.units, self.name, self.head = {}, {}, {}, {}
        self.specs = defaultdict(dict)  # leaf -> {axis: (node, role)}
        self.uses = defaultdict(list)  # eqn index -> [(leaf, axis, node, role)]
        self.kind, self.labs, self.origin = {}, {}, {}
        self.producer, self.consumers = {}, defaultdict(list)
        for li, vid in enumerate(program.invars):
            shape = program.avals[vid][0]
            if li == x_index:
                self.kind[vid] = "data"
                self.labs[vid] = ((BATCH,) + (None,) * (len(shape) - 1)) if shape else ()
                self.origin[vid] = frozenset()
            else:
                self.kind[vid] = "param"
                self.labs[vid] = tuple(frozenset({(li, a)}) for a in range(len(shape)))
                self.origin[vid] = frozenset({li})

    # ---------------------------------------------------------------- groups
    def find(self, n):
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def new_node(self, units, leaf):
        n = len(self.parent)
        self.parent[n], self.units[n] = n, int(units)
        path = self.paths[leaf]
        self.name[n] = "/".join(path[1:-1]) or path[-1]
        return n

    def unify(self, a, b, prim, eqn_leaf=None):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.units[a] != self.units[b]:
            self.fail(prim, "merges unit groups of different sizes", eqn_leaf, a)
        lo, hi = min(a, b), max(a, b)
        self.parent[hi] = lo
        if hi in self.head:
            self.head.setdefault(lo, self.head[hi])
        return lo

    def fail(self, prim, what, leaf=None, node=None):
        where = ""
        if leaf is not None:
            where = f" (parameter {'/'.join(self.paths[leaf])})"
        elif node is not None:
            where = f" (unit group of parameter {self.name[self.find(node)]})"
        raise InputError(f"cannot infer the unit layout: primitive {prim!r} {what}{where}{_HINT}")

    def spec(self, k, leaf, axis, node, role, prim):
        node = self.find(node)
        old = self.specs[leaf].get(axis)
        if old is not None:
            if old[1] != role:
                self.fail(prim, "uses one parameter axis both as fan-in and as output", leaf)
            node = self.unify(old[0], node, prim, leaf)
        self.specs[leaf][axis] = (node, role)
        self.uses[k].append((leaf, axis, node, role))

    # ---------------------------------------------------------------- labels
    def info(self, a):
        if isinstance(a, Lit):
            return "const", (None,) * np.ndim(a.val), frozenset()
        return self.kind[a], self.labs[a], self.origin[a]

    def merge(self, x, y, prim, leaf=None, k=None):
        """Label of an axis where two aligned labels meet. "P" labels are parameter axes
        aligned with a data axis of no group yet (a LayerNorm scale multiplying the
        broadcast 1/std): they become "out" axes of the first group they meet."""
        if x is None:
            return y
        if y is None or x == y:
            return x
        if x[0] == "P" or y[0] == "P":
            p, o = (x, y) if x[0] == "P" else (y, x)
            if o[0] == "P":
                return ("P", p[1] | o[1])
            if o[0] == "B":
                self.fail(prim, "aligns a parameter axis with the batch axis", min(p[1])[0])
            self.align(k, p[1], self.lab(o), prim)
            return o
        if x[0] == y[0] == "B":
            return x
        if x[0] == y[0] and x[0] in ("U", "H", "D") and x[2] == y[2]:
            return (x[0], self.unify(x[1], y[1], prim, leaf), x[2])
        self.fail(prim, f"combines incompatible axes {x[0]} and {y[0]}", leaf,
                  x[1] if x[0] != "B" else (y[1] if y[0] != "B" else None))

    def lab(self, lab):
        return (lab[0], self.find(lab[1]), lab[2]) if _unit(lab) else lab

    def out_node(self, k, src, size, prim, origin):
        """Group started by parameter axes ``src`` (an output-feature axis)."""
        if not src:
            self.fail(prim, "has an output axis of a parameter it cannot trace",
                      min(origin) if origin else None)
        node = None
        for leaf, axis in sorted(src):
            old = self.specs[leaf].get(axis)
            if old is not None and old[1] == "out":
                node = old[0] if node is None else self.unify(node, old[0], prim, leaf)
        if node is None:
            node = self.new_node(size, min(src)[0])
        for leaf, axis in sorted(src):
            self.spec(k, leaf, axis, node, "out", prim)
        return ("U", self.find(node), 1)

    def align(self, k, src, lab, prim):
        """Parameter axes ``src`` aligned with a data axis labelled ``lab`` (broadcast op)."""
        if lab is None or not src:
            return
        leaf = min(src)[0]
        if lab[0] != "U" or lab[2] != 1:
            kind = "batch" if lab[0] == "B" else "split"
            self.fail(prim, f"aligns a parameter axis with a {kind} axis", leaf)
        for lf, ax in sorted(src):
            self.spec(k, lf, ax, lab[1], "out", prim)

    def contract(self, k, src, lab, prim, origin):
        """Parameter axes ``src`` contracted with a data axis labelled ``lab`` (fan-in)."""
        if lab is None or lab[0] == "P":
            return
        if lab[0] != "U":
            self.fail(prim, "contracts a parameter with a batch or head axis",
                      min(origin) if origin else None)
        if not src:
            self.fail(prim, "contracts units with a parameter axis it cannot trace",
                      min(origin) if origin else None)
        for lf, ax in sorted(src):
            self.spec(k, lf, ax, lab[1], "in", prim)

    # ---------------------------------------------------------------- per primitive
    def run(self):
        for k, e in enumerate(self.p.eqns):
            for a in e.ins:
                if not isinstance(a, Lit):
                    self.consumers[a].append(k)
            for o in e.outs:
                self.producer[o] = k
            kinds = [self.info(a)[0] for a in e.ins]
            origin = frozenset().union(*[self.info(a)[2] for a in e.ins]) if e.ins else frozenset()
            shapes = [self.p.avals[o][0] for o in e.outs]
            if "data" in kinds:
                labs = self.data_rule(k, e, origin)
                kind = "data"
            elif "param" in kinds:
                labs = self.param_rule(e)
                kind = "param"
            else:
                labs, kind = [(None,) * len(s) for s in shapes], "const"
            for o, lab in zip(e.outs, labs):
                self.kind[o], self.labs[o], self.origin[o] = kind, tuple(lab), origin
        return self

    def name_of(self, e):
        return e.prim.name

    def param_rule(self, e):
        name = self.name_of(e)
        ins = [self.info(a) for a in e.ins]
        oshape = [self.p.avals[o][0] for o in e.outs]
        none = [tuple(frozenset() for _ in s) for s in oshape]
        if name in ELEMENTWISE or (_sub(e) is not None):
            if len(e.outs) != 1:
                return none
            out = [frozenset() for _ in oshape[0]]
            for a, (kind, labs, _) in zip(e.ins, ins):
                if kind == "param" and len(labs) == len(out):
                    shp = self.shape(a)
                    for i, s in enumerate(labs):
                        if shp[i] == oshape[0][i]:
                            out[i] = out[i] | s
            return [tuple(out)]
        return self.structural(e, [labs for _, labs, _ in ins], oshape, frozenset(), none)

    def shape(self, a):
        return np.shape(a.val) if isinstance(a, Lit) else self.p.avals[a][0]

    def structural(self, e, in_labs, oshape, empty, default):
        """Label maps shared by data and parameter values (empty = label of 'no axis')."""
        name, pr = self.name_of(e), e.params
        lab0 = in_labs[0] if in_labs else ()
        if name == "transpose":
            return [tuple(lab0[i] for i in pr["permutation"])]
        if name == "broadcast_in_dim":
            out = [empty] * len(oshape[0])
            ishape = self.shape(e.ins[0])
            for i, d in enumerate(pr["broadcast_dimensions"]):
                if ishape[i] == oshape[0][d]:
                    out[d] = lab0[i]
            return [tuple(out)]
        if name == "squeeze":
            drop = {d % max(len(lab0), 1) for d in pr["dimensions"]}
            return [tuple(lb for i, lb in enumerate(lab0) if i not in drop)]
        if name in _REDUCE:
            drop = set(pr["axes"])
            return [tuple(lb for i, lb in enumerate(lab0) if i not in drop)]
        if name == "reshape":
            return [self.reshape(e, lab0, self.shape(e.ins[0]), oshape[0], empty)]
        if name in ("slice", "dynamic_slice", "pad", "reduce_window_max", "reduce_window_sum",
                    "reduce_window_min", "cumsum", "cummax", "cummin", "cumprod",
                    "cumlogsumexp", "rev", "sort"):
            ishape = self.shape(e.ins[0])
            out = []
            for i, lb in enumerate(lab0):
                changed = ishape[i] != oshape[0][i] or (name == "rev" and i in pr["dimensions"])
                if name.startswith("cum") or name == "sort":
                    changed = i == pr.get("axis", pr.get("dimension", -1)) % len(lab0)
                if name.startswith("reduce_window"):
                    changed = changed or pr["window_dimensions"][i] != 1
                out.append(self.changed(e, lb, empty) if changed else lb)
            return [tuple(out)] + [tuple(empty for _ in s) for s in oshape[1:]]
        if name == "concatenate":
            d = pr["dimension"]
            out = []
            for i in range(len(oshape[0])):
                labs = [lb[i] for lb in in_labs]
                if i == d:
                    out.append(self.changed(e, next((lb for lb in labs if lb), None), empty)
                               if empty is None else empty)
                else:
                    out.append(self.merge_all(e, labs, empty))
            return [tuple(out)]
        return default

    def changed(self, e, lab, empty):
        """Label of an axis whose entries move (slice, window, sort): units may not move."""
        if empty is None and _unit(lab):
            self.fail(self.name_of(e), "moves or drops units along a unit axis",
                      node=lab[1])
        return empty

    def merge_all(self, e, labs, empty):
        if empty is not None:  # parameter value: union of sources
            return frozenset().union(*labs)
        out = None
        for lb in labs:
            out = self.merge(out, lb, self.name_of(e))
        return out

    def reshape(self, e, lab, ishape, oshape, empty):
        out = [empty] * len(oshape)
        is_param = empty is not None
        if not is_param:
            lab = tuple(lb if (lb is None or lb[0] != "P") else None for lb in lab)
        for gi, gj in _reshape_groups(tuple(ishape), tuple(oshape)):
            if not gj:
                continue
            labs = [lab[i] for i in gi if ishape[i] != 1]
            sizes = [ishape[i] for i in gi if ishape[i] != 1]
            if is_param:
                if len(gi) >= 1 and len(gj) == 1:
                    out[gj[0]] = labs[0] if len(labs) == 1 else frozenset()
                elif len(gi) == 1:
                    big = [j for j in gj if oshape[j] != 1]
                    if len(big) == 1:
                        out[big[0]] = lab[gi[0]]
                continue
            real = [(lb, s) for lb, s in zip(labs, sizes) if lb is not None]
            if len(gj) == 1:
                j = gj[0]
                if not real:
                    out[j] = None
                elif len(labs) == 1:
                    out[j] = labs[0]
                elif labs[-1] is not None and labs[-1][0] == "U" and len(real) == 1:
                    u = labs[-1]
                    out[j] = ("U", self.find(u[1]), u[2] * int(np.prod(sizes[:-1])))
                elif (len(labs) == 2 and labs[0] and labs[1] and labs[0][0] == "H"
                      and labs[1][0] == "D"):
                    out[j] = ("U", self.unify(labs[0][1], labs[1][1], "reshape"), 1)
                elif all(lb[0] == "B" for lb, _ in real):
                    out[j] = None
                else:
                    self.fail("reshape", "flattens a unit axis that is not the fastest (need "
                              "channels-last, unit fastest)",
                              node=next(lb[1] for lb, _ in real if _unit(lb)))
                continue
            big = [j for j in gj if oshape[j] != 1]
            if not real:
                continue
            if len(labs) != 1:
                self.fail("reshape", "regroups several labelled axes at once",
                          node=next((lb[1] for lb, _ in real if _unit(lb)), None))
            lb = labs[0]
            if lb[0] == "B":
                continue
            node = self.find(lb[1])
            u = self.units[node]
            if lb[0] == "U" and lb[2] == 1 and len(big) == 2:
                heads, hd = oshape[big[0]], oshape[big[1]]
                out[big[0]], out[big[1]] = ("H", node, hd), ("D", node, heads)
                if self.head.setdefault(node, hd) != hd:
                    self.fail("reshape", "splits one unit group into heads of different sizes",
                              node=node)
            elif lb[0] == "U" and oshape[big[-1]] == u:
                out[big[-1]] = ("U", node, 1)
            elif len(big) == 1:
                out[big[0]] = lb
            else:
                self.fail("reshape", "splits a unit axis in a way other than (heads, head_dim) "
                          "or an NHWC unflatten", node=node)
        return tuple(out)

    def data_rule(self, k, e, origin):
        name = self.name_of(e)
        ins = [self.info(a) for a in e.ins]
        oshape = [self.p.avals[o][0] for o in e.outs]
        if name in ("dot_general", "conv_general_dilated"):
            return [self.contraction(k, e, ins, origin)]
        # call equations left by ``trace`` are atomic element-wise calls (relu, gelu, ...)
        elementwise = name in ELEMENTWISE or _sub(e) is not None
        if elementwise and len(e.outs) == 1:
            rank = len(oshape[0])
            out = [None] * rank
            for a, (kind, labs, _) in zip(e.ins, ins):  # size-1 axes broadcast: no label
                if kind == "data" and len(labs) == rank:
                    shp = self.shape(a)
                    for i in range(rank):
                        if shp[i] == oshape[0][i]:
                            out[i] = self.merge(out[i], labs[i], name, k=k)
            for a, (kind, labs, _) in zip(e.ins, ins):
                if kind == "param" and len(labs) == rank:
                    shp = self.shape(a)
                    for i in range(rank):
                        if labs[i] and shp[i] == oshape[0][i]:
                            out[i] = self.merge(out[i], ("P", labs[i]), name, k=k)
            return [tuple(self.lab(lb) for lb in out)]
        if name == "concatenate":
            d = e.params["dimension"]
            rank = len(oshape[0])
            out = []
            for i in range(rank):
                labs = [lb[i] for kind, lb, _ in ins if kind == "data"]
                out.append(self.changed(e, next((lb for lb in labs if lb), None), None)
                           if i == d else self.merge_all(e, labs, None))
            for kind, labs, _ in ins:
                if kind == "param":
                    for i in range(rank):
                        if i != d and labs[i]:
                            out[i] = self.merge(out[i], ("P", labs[i]), name, k=k)
            return [tuple(self.lab(lb) for lb in out)]
        params_in = [o for kind, _, o in ins if kind == "param"]
        datas = [i for i, (kind, _, _) in enumerate(ins) if kind == "data"]
        if params_in or len(datas) != 1 or datas[0] != 0:
            labelled = any(_unit(lb) for kind, labs, _ in ins
                           if kind == "data" for lb in labs)
            if params_in or labelled:
                leaf = min(frozenset().union(*params_in)) if params_in else None
                node = next((lb[1] for kind, labs, _ in ins if kind == "data" for lb in labs
                             if _unit(lb)), None)
                self.fail(name, "is not supported here", leaf, node)
            return [(None,) * len(s) for s in oshape]
        res = self.structural(e, [ins[0][1]], oshape, None, None)
        if res is None:
            if any(_unit(lb) for lb in ins[0][1]):
                self.fail(name, "is not supported on unit axes", node=next(
                    lb[1] for lb in ins[0][1] if _unit(lb)))
            return [(None,) * len(s) for s in oshape]
        return [tuple(self.lab(lb) for lb in r) for r in res]

    def contraction(self, k, e, ins, origin):
        name = self.name_of(e)
        (lk, ll, lo), (rk, rl, ro) = ins[0], ins[1]
        if name == "conv_general_dilated":
            dn = e.params["dimension_numbers"]
            lspec, rspec, ospec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
            if lk != "data" or rk == "data":
                self.fail(name, "convolves data with data or a parameter with data as kernel",
                          min(ro | lo) if (ro | lo) else None)
            if e.params["feature_group_count"] != 1 or e.params["batch_group_count"] != 1:
                self.fail(name, "has feature or batch groups (depthwise/grouped conv)",
                          min(ro) if ro else None)
            out = [None] * len(ll)
            out[ospec[0]] = ll[lspec[0]]
            if rk == "param":
                self.contract(k, rl[rspec[1]], self.lab(ll[lspec[1]]), name, ro)
                size = self.p.avals[e.outs[0]][0][ospec[1]]
                out[ospec[1]] = self.out_node(k, rl[rspec[0]], size, name, ro)
            return tuple(out)
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        lfree = [i for i in range(len(ll)) if i not in lc and i not in lb]
        rfree = [i for i in range(len(rl)) if i not in rc and i not in rb]
        oshape = self.p.avals[e.outs[0]][0]
        out = []
        if lk == rk == "data":
            for i, j in zip(lc, rc):
                self.merge(ll[i], rl[j], name)
            out = [self.merge(ll[i], rl[j], name) for i, j in zip(lb, rb)]
            return tuple(self.lab(x) for x in out + [ll[i] for i in lfree]
                         + [rl[i] for i in rfree])
        data_left = lk == "data"
        dl, pl, pk, pc, dc, pfree, dfree, po = ((ll, rl, rk, rc, lc, rfree, lfree, ro) if data_left
                                                else (rl, ll, lk, lc, rc, lfree, rfree, lo))
        if pk == "param":
            if lb:
                self.fail(name, "has batch dimensions shared with a parameter", min(po))
            for i, j in zip(dc, pc):
                self.contract(k, pl[j], self.lab(dl[i]), name, po)
            big = [j for j in pfree if (self.shape(e.ins[1 if data_left else 0])[j] != 1)]
            if len(big) > 1:
                self.fail(name, "uses a kernel with more than one output axis", min(po))
            plabs = []
            base = len(lb) + (len(lfree) if data_left else 0)
            for n, j in enumerate(pfree):
                pos = base + n if data_left else len(lb) + n
                plabs.append(self.out_node(k, pl[j], oshape[pos], name, po) if j in big
                             else None)
        else:
            plabs = [None] * len(pfree)
        dlabs = [dl[i] for i in dfree]
        labs = dlabs + plabs if data_left else plabs + dlabs
        return tuple(self.lab(x) for x in labs)


def _reshape_groups(ishape, oshape):
    """Pair consecutive input and output axes with equal products: [(in axes, out axes)]."""
    groups, i, j = [], 0, 0
    while i < len(ishape) or j < len(oshape):
        if i < len(ishape) and ishape[i] == 1 and not (j < len(oshape) and oshape[j] == 1):
            groups.append(([i], []))
            i += 1
            continue
        if j < len(oshape) and oshape[j] == 1 and not (i < len(ishape) and ishape[i] == 1):
            groups.append(([], [j]))
            j += 1
            continue
        gi, gj = [i], [j]
        pi, pj = ishape[i], oshape[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                gi.append(i)
                pi *= ishape[i]
                i += 1
            else:
                gj.append(j)
                pj *= oshape[j]
                j += 1
        groups.append((gi, gj))
    return groups


# -------------------------------------------------------------------- activation sites


def _nonlinear(e, closure) -> bool:
    name = e.prim.name
    if _sub(e) is not None:
        return True
    if name in _LINEAR_UNARY or name in ("add", "sub"):
        return False
    if name in ("mul", "div"):
        return sum(1 for a in e.ins if not isinstance(a, Lit) and a in closure) > 1
    return True


def find_sites(inf: _Inference):
    """[(z id, h id, region eqn indices)] in forward order."""
    p, sites, claimed = inf.p, [], set()
    outvars = {a for a in p.outvars if not isinstance(a, Lit)}
    for z in sorted(inf.producer, key=inf.producer.get):
        labs = inf.labs[z]
        if (z in claimed or inf.kind[z] != "data" or len(labs) < 2 or labs[0] != BATCH
                or labs[-1] is None or labs[-1][0] != "U" or labs[-1][2] != 1):
            continue
        shape = p.avals[z][0]
        closure, region = {z}, []
        heap = sorted(set(inf.consumers[z]))
        seen = set(heap)
        while heap:
            k = heapq.heappop(heap)
            e = p.eqns[k]
            if not (e.prim.name in ELEMENTWISE or _sub(e) is not None) or len(e.outs) != 1:
                continue
            if p.avals[e.outs[0]][0] != shape:
                continue
            ok = all(isinstance(a, Lit) or a in closure or inf.kind[a] == "const"
                     or (inf.kind[a] == "param" and p.avals[a][0] == ()) for a in e.ins)
            if not ok:
                continue
            closure.add(e.outs[0])
            region.append(k)
            for c in inf.consumers[e.outs[0]]:
                if c not in seen:
                    seen.add(c)
                    heapq.heappush(heap, c)
        found = _pick_exit(inf, z, region, outvars)
        if found is None:
            continue
        h, region = found
        closure = {z} | {p.eqns[k].outs[0] for k in region}
        if inf.kind[h] != "data" or p.avals[h][1] == np.bool_:
            continue
        rank = len(shape)
        if inf.consumers[h] and all(  # only feeds statistics (a norm's x^2): not a layer
                p.eqns[c].prim.name in _REDUCE and {0, rank - 1} & set(p.eqns[c].params["axes"])
                for c in inf.consumers[h]):
            continue
        claimed |= closure
        sites.append((z, h, tuple(region)))
    return sites


def _pick_exit(inf, z, region, outvars):
    """The last value h of the element-wise chain such that the equations it depends on use z
    only among themselves, contain a non-linear primitive and have h as their only value used
    outside: (h, those equation indices) or None. (A LayerNorm after the activation squares h:
    the chain then continues past h, so h is not its last value.)"""
    p, region = inf.p, set(region)
    if z in outvars:
        return None
    for k in sorted(region, reverse=True):
        h = p.eqns[k].outs[0]
        sub, stack = set(), [k]
        while stack:
            j = stack.pop()
            if j in sub:
                continue
            sub.add(j)
            stack += [inf.producer[a] for a in p.eqns[j].ins
                      if not isinstance(a, Lit) and a != z and inf.producer.get(a) in region]
        if any(c not in sub for c in inf.consumers[z]):
            continue
        inner = [p.eqns[j].outs[0] for j in sub if j != k]
        if any(v in outvars or any(c not in sub for c in inf.consumers[v]) for v in inner):
            continue
        closure = {z} | {p.eqns[j].outs[0] for j in sub}
        if p.avals[h][0] == p.avals[z][0] and any(_nonlinear(p.eqns[j], closure) for j in sub):
            return h, tuple(sorted(sub))
    return None


def _incoming(inf, z, group, stops):
    out, stack, seen = set(), [z], {z}
    while stack:
        v = stack.pop()
        k = inf.producer.get(v)
        if k is None:
            continue
        for leaf, axis, node, role in inf.uses[k]:
            if role == "out" and inf.find(node) == group and inf.paths[leaf][0] == "params":
                out.add((inf.paths[leaf], axis))
        for a in inf.p.eqns[k].ins:
            if (not isinstance(a, Lit) and inf.kind[a] == "data" and a not in seen
                    and a not in stops):
                seen.add(a)
                stack.append(a)
    return out


def _outgoing(inf, h, group):
    out, stack, seen = set(), [h], {h}
    while stack:
        v = stack.pop()
        for k in inf.consumers[v]:
            e = inf.p.eqns[k]
            name = e.prim.name
            if name in ("dot_general", "conv_general_dilated"):
                for leaf, axis, node, role in inf.uses[k]:
                    if role == "in" and inf.find(node) == group and inf.paths[leaf][0] == "params":
                        out.add((inf.paths[leaf], axis))
                continue
            if name not in _ZERO_KEEP:
                continue
            others = [a for a in e.ins if a is not v and not isinstance(a, Lit)]
            if name in ("mul", "div") and any(inf.kind[a] == "data" for a in others):
                continue
            if name == "div" and e.ins[0] is not v:
                continue
            if name == "select_n" and (any(inf.kind[a] != "const" for a in others[1:])
                                       or e.ins[0] is v):
                continue
            if name == "reduce_sum" and (len(inf.labs[v]) - 1) in e.params["axes"]:
                continue
            for o in e.outs:
                if o not in seen:
                    seen.add(o)
                    stack.append(o)
    return out


def infer_layout(program: Program, paths: list, x_index: int, points: dict | None = None):
    """(Layout, sites {layer: (z id, h id)}, regions {layer: eqn indices}) of a traced program.

    paths: leaf index -> path tuple (collection first), one per non-x input.
    points: optional {name: index into ``program.outvars``} of values the model itself reports
        as its monitored activations (the zoo's ``Output.activations``); the other outputs are
        the network output. Then a layer whose activation is a point takes the point's name, a
        layer that is no point is unmonitored (``monitored=False``), and a point that is no
        activation site (a ViT block output) becomes a monitored layer without activation
        function, in the group of its last axis. ``kinds`` lists the points only.
    Layers are in forward order (of their activation value). Raises InputError naming the
    primitive and parameter path where inference cannot prove the layout.
    """
    inf = _Inference(program, paths, x_index).run()
    raw = find_sites(inf)
    named = {program.outvars[i]: n for n, i in (points or {}).items()}
    # Units of the network output (logits) are not hidden units: drop their group.
    output = {inf.find(lb[1]) for a in program.outvars if not isinstance(a, Lit)
              and a not in named and inf.kind.get(a) == "data" for lb in inf.labs[a]
              if _unit(lb)}
    for li in list(inf.specs):
        inf.specs[li] = {ax: (n, r) for ax, (n, r) in inf.specs[li].items()
                         if inf.find(n) not in output}
    raw = [s for s in raw if inf.find(inf.labs[s[0]][-1][1]) not in output]
    groups = {}
    for n in inf.parent:
        r = inf.find(n)
        if r in output:
            continue
        if r not in groups:
            base, name, c = inf.name[r], inf.name[r], 2
            while name in groups.values():
                name, c = f"{base}#{c}", c + 1
            groups[r] = name
    leaves = {}
    for li, path in enumerate(paths):
        if li == x_index:
            continue
        specs = inf.specs.get(li, {})
        leaves[path] = tuple((ax, groups[inf.find(n)], role)
                             for ax, (n, role) in sorted(specs.items()))
    hs = {h for _, h, _ in raw}
    found, sites, regions = [], {}, {}
    for z, h, region in raw:
        g = inf.find(inf.labs[z][-1][1])
        inc = sorted(_incoming(inf, z, g, hs))
        out = sorted(_outgoing(inf, h, g))
        name = named.get(h) or _layer_name(inc, groups[g])
        base, c = name, 2
        while name in sites:
            name, c = f"{base}#{c}", c + 1
        monitored = points is None or h in named
        found.append((inf.producer[h], name, h, LayerSpec(groups[g], True, monitored,
                                                          tuple(inc), tuple(out))))
        sites[name] = (z, h)
        regions[name] = region
    for v, name in named.items():  # reported values that are no activation site
        lab = inf.labs.get(v, ())
        if v not in hs and lab and _unit(lab[-1]) and inf.find(lab[-1][1]) in groups:
            found.append((inf.producer.get(v, -1), name, v,
                          LayerSpec(groups[inf.find(lab[-1][1])], False, True, (), ())))
    layers, kinds = {}, {}
    for _, name, h, spec in sorted(found, key=lambda f: f[0]):
        layers[name] = spec
        if not spec.monitored:
            continue
        rank = len(program.avals[h][0])
        if rank not in _KINDS:
            raise InputError(f"activation of group {spec.group} has rank {rank}; monitored "
                             f"layers must be (B, D), (B, T, D) or (B, H, W, C){_HINT}")
        kinds[name] = _KINDS[rank]
    head_dims = {groups[inf.find(n)]: hd for n, hd in inf.head.items()
                 if inf.find(n) in groups}
    return Layout(leaves, layers, kinds, head_dims), sites, regions


def _layer_name(incoming, group):
    """Name a layer after its last incoming kernel's module path (else its group)."""
    best = None
    for path, _ in incoming:
        if len(path) > 2 and path[-1] in ("kernel", "weight", "w", "W"):
            best = "/".join(path[1:-1])
    return best or group


__all__ = ["infer_layout", "find_sites"]
