"""Row/column equitability (M_RE, M_CE) and the base (quotient) network.

For a partition, let A be block averaging along a unit axis and C = I - A (centring within
blocks); singleton groups have A = I, C = 0. For a leaf with fan-in axis a and output axis b
(W[u, v] is the edge u -> v) the inter-block submatrices W[S_i, S_j] satisfy (PAPER.md 1.4):

- M_CE (equal column sums sum_{u in S_i} W[u, v] over v in S_j):  A_a C_b W = 0;
- M_RE (equal row sums sum_{v in S_j} W[u, v] over u in S_i):     C_a A_b W = 0;
- M_RE and M_CE together: W = A_a A_b W + C_a C_b W (block-constant plus doubly centred),
  so ``equitable_projection`` = A A + C C is the orthogonal projector onto M_RE cap M_CE.

A leaf with one unit axis (biases, norm parameters and statistics, CLS token, positional
embedding, first-layer kernels, the head's kernel) needs equal entries within each block
(C W = 0); this is counted as a column (forward) condition for "out" axes and a row
(backward) condition for "in" axes. Forward cloning needs M_CE only; backward cloning and
tangency need both (v2 Theorem A.1; the v1 text swaps RE and CE).

:func:`base_network` builds the quotient network: one unit per block, weights equal to the
common column sum sum_{u in S_i} W[u, v] (PAPER.md 1.4 erratum: *not* total / |S_i|),
per-unit parameters and statistics equal to the block value. On M_CE it computes exactly the
expanded network's function (up to float32 rounding).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .blocks import block_mean, partition_axis
from .manifold import tree_norm
from .partition import Partition, collection_paths, is_variables


def _axis_ops(partition, path, shape):
    """[(spec, AxisMeta, AxisOp)] for the unit axes of one leaf (trivial groups included)."""
    ops = []
    for spec in partition.specs(path):
        ops.append((spec,) + partition_axis(partition, spec, shape[spec.axis]))
    if len(ops) > 2:
        raise InputError(f"leaf {'/'.join(path)} has {len(ops)} unit axes; at most 2 supported")
    return ops


def _avg(x, op):
    return block_mean(x, op[1], op[2])


def _leaf_residuals(x, ops):
    """(row residual, column residual) arrays of one leaf."""
    zero = jnp.zeros_like(x)
    if not ops:
        return zero, zero
    if len(ops) == 1:
        c = x - _avg(x, ops[0])
        return (c, zero) if ops[0][0].role == "in" else (zero, c)
    a, b = ops if ops[0][0].role == "in" else ops[::-1]
    ax_b = _avg(x, b)
    ax_a = _avg(x, a)
    row = ax_b - _avg(ax_b, a)   # C_a A_b x
    col = ax_a - _avg(ax_a, b)   # A_a C_b x
    return row, col


def equitable_residuals(partition: Partition, params) -> dict:
    """{"row": ||C_a A_b W||, "column": ||A_a C_b W||, "norm": ||W||} over all leaves
    (jnp scalars; params tree or variables dict). Cost O(number of parameters)."""
    rows, cols = [], []
    for path, x in collection_paths(params):
        r, c = _leaf_residuals(jnp.asarray(x), _axis_ops(partition, path, np.shape(x)))
        rows.append(r)
        cols.append(c)
    return {"row": tree_norm(rows), "column": tree_norm(cols), "norm": tree_norm(params)}


def _check_rtol(rtol):
    if not isinstance(rtol, (int, float)) or rtol < 0:
        raise InputError(f"rtol={rtol!r} must be a number >= 0")


def in_row_equitable(partition: Partition, params, *, rtol: float = 1e-5) -> bool:
    """True when every inter-block submatrix has equal row sums within rtol * ||params||."""
    _check_rtol(rtol)
    r = equitable_residuals(partition, params)
    return bool(r["row"] <= rtol * r["norm"])


def in_column_equitable(partition: Partition, params, *, rtol: float = 1e-5) -> bool:
    """True when every inter-block submatrix has equal column sums within rtol * ||params||
    (forward cloning: units of a block compute identical values)."""
    _check_rtol(rtol)
    r = equitable_residuals(partition, params)
    return bool(r["column"] <= rtol * r["norm"])


def equitable_projection(partition: Partition, params):
    """Orthogonal projection of ``params`` onto M_RE cap M_CE (per leaf A A W + C C W; one
    unit axis: A W). A pytree like ``params``."""
    out = []
    for path, x in collection_paths(params):
        x = jnp.asarray(x)
        ops = _axis_ops(partition, path, np.shape(x))
        if not ops:
            out.append(x)
        elif len(ops) == 1:
            out.append(_avg(x, ops[0]))
        else:
            aa = _avg(_avg(x, ops[0]), ops[1])
            ca = x - _avg(x, ops[0])
            cc = ca - _avg(ca, ops[1])
            out.append(aa + cc)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), out)


# ------------------------------------------------------------------------------------------
# Base (quotient) network.


def quotient_leaf(x, partition, path):
    """Reduce each unit axis to one entry per block (host-side NumPy): "in" axes sum over the
    block (the common column sum), "out" axes take the block mean (the common value)."""
    x = np.asarray(x)
    for spec in partition.specs(path):
        ids, nseg = partition.axis_ids(spec, x.shape[spec.axis])
        xm = np.moveaxis(x, spec.axis, 0)
        s = np.zeros((nseg,) + xm.shape[1:], xm.dtype)
        np.add.at(s, ids, xm)
        if spec.role == "out":
            s = s / np.bincount(ids, minlength=nseg).reshape((-1,) + (1,) * (xm.ndim - 1))
        x = np.moveaxis(s.astype(xm.dtype), 0, spec.axis)
    return jnp.asarray(x)


def _uniform(partition, group, why):
    sizes = partition.block_sizes(group)
    if sizes.size and sizes.min() != sizes.max():
        raise InputError(f"group {group!r} has blocks of sizes {sorted(set(sizes.tolist()))}; "
                         f"{why} needs equal block sizes")


def _base_options(model, partition) -> dict:
    opts = dict(model.options)
    k = {g: partition.num_blocks(g) for g in partition.groups}
    fam = model.name
    layer_norm = opts.get("norm") == "layer"
    if fam == "mlp":
        opts["widths"] = tuple(k[f"hidden_{i}"] for i in range(len(opts["widths"])))
        normed = [f"hidden_{i}" for i in range(len(opts["widths"]))]
    elif fam == "cnn":
        opts["channels"] = tuple(k[f"conv_{i}"] for i in range(len(opts["channels"])))
        opts["fc_widths"] = tuple(k[f"fc_{j}"] for j in range(len(opts["fc_widths"])))
        normed = [f"conv_{i}" for i in range(len(opts["channels"]))]
    elif fam == "resnet18":
        base = k["stage1"]
        for g, n in k.items():
            s = int(re.match(r"(?:stage|layer)(\d+)", g).group(1))
            if n != base * 2 ** (s - 1):
                raise InputError(f"group {g!r} has {n} blocks; a resnet18 quotient needs "
                                 f"{base * 2 ** (s - 1)} (base_channels={base} doubling per stage)")
        opts["base_channels"] = base
        normed = list(k)
    elif fam == "vit":
        dim = k["embed"]
        hidden = {n for g, n in k.items() if g.endswith("_mlp")}
        if len(hidden) > 1:
            raise InputError(f"vit MLP groups have different block counts {sorted(hidden)}; "
                             "the quotient needs one MLP width")
        for g, n in k.items():
            if g.endswith("/attn"):
                _check_heads(partition, g, dim)
        hd = next(iter(partition.head_dims.values()), dim // opts["heads"])
        opts["dim"], opts["heads"] = dim, dim // hd
        h = hidden.pop() if hidden else int(dim * opts["mlp_ratio"])
        ratio = h / dim
        opts["mlp_ratio"] = ratio if int(dim * ratio) == h else (h + 0.5) / dim
        normed = ["embed"]
    else:  # pragma: no cover - families are validated earlier
        raise InputError(f"model family {fam!r} is not supported")
    if layer_norm:
        for g in normed:
            _uniform(partition, g, "layer norm in the quotient (mean over features)")
    return opts


def _check_heads(partition, group, dim):
    """The attention features of a vit quotient must form whole heads: wide feature j of wide
    head j // hd maps to base feature b with b % hd == j % hd, and a wide head maps to one
    base head."""
    ids = partition.groups[group]
    if partition.num_blocks(group) != dim:
        raise InputError(f"group {group!r} has {partition.num_blocks(group)} blocks; a vit "
                         f"quotient needs {dim} (= the embedding blocks)")
    hd = partition.head_dims.get(group)
    if hd is None:
        raise InputError("base_network for vit needs the head size: build the partition with "
                         "the model (unit_partition(model, variables) or expand)")
    j = np.arange(ids.size)
    heads = {}
    ok = dim % hd == 0 and np.all(ids % hd == j % hd)
    for wide_head, base_head in zip(j // hd, ids // hd):
        ok = ok and heads.setdefault(int(wide_head), int(base_head)) == int(base_head)
    if not ok:
        raise InputError(f"group {group!r}: clone blocks do not form whole attention heads of "
                         f"size {hd}; the quotient would not be a vit")


def base_network(model, variables, partition: Partition):
    """The base (quotient) network of ``model`` under ``partition``: (base_model, base_variables).

    One unit per block; kernel entries = common column sums sum_{u in S_i} W[u, v] (averaged
    over v in S_j, exact on M_CE); biases, norm parameters, running statistics, CLS token and
    positional embedding = block means. The base model is ``pdx.models.create`` with the block
    counts as widths (mlp, cnn any partition; resnet18 needs block counts doubling per stage;
    vit needs whole heads). With layer norm the normalised groups need equal block sizes.
    Raises InputError when the quotient is not a network of the same family.
    On M_CE the base network's outputs equal the network's outputs to float32 rounding.
    """
    from ..models import create  # models sit below manifolds

    if not is_variables(variables):
        raise InputError("variables must be the variables dict {'params': ..., ...}")
    opts = _base_options(model, partition)
    leaves = [quotient_leaf(x, partition, path) for path, x in collection_paths(variables)]
    base_vars = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables), leaves)
    return create(model.name, **opts), dict(base_vars)


__all__ = ["equitable_residuals", "in_row_equitable", "in_column_equitable",
           "equitable_projection", "base_network", "quotient_leaf"]
