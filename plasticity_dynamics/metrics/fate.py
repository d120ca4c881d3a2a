"""Unit fate tracking: what each unit is at each record, and how it gets there and back.

:func:`unit_states` (jit-able) labels every unit of one layer at one record with one state,
by priority dead > frozen > saturated > dormant > active (a dead ReLU unit is also frozen,
saturated and dormant; it is reported as dead), plus its clone cluster (the smallest unit index
of its cluster, -1 when it has no clone). :func:`track_fate` (NumPy, host side) takes the
sequence of those arrays over records and returns plain dicts and arrays: state fractions,
transition counts (all, within a task, across task switches), dwell times, revivals,
dead-set persistence (dopamine ReDo), and clone-cluster persistence.

States are the criteria of :mod:`.units` and :mod:`.similarity` with the paper's thresholds
(arXiv 2510.00304, App. B.1.2) and ReDo's tau = 0.025 for dormant.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .layout import check_matrix
from .similarity import clone_clusters
from .units import dead_units, dormant_units, frozen_units, saturated_units

STATES = ("active", "dormant", "saturated", "frozen", "dead")
ACTIVE, DORMANT, SATURATED, FROZEN, DEAD = range(5)


class UnitStates(NamedTuple):
    """state: (units,) int32 index into STATES; cluster: (units,) int32 cluster label or -1."""

    state: jnp.ndarray
    cluster: jnp.ndarray


_STATIC = ("activation", "dead_eps", "dead_frac", "dormant_tau", "sat_tau", "sat_frac", "frozen_eps",
           "frozen_frac", "clone_threshold")


@functools.partial(jax.jit, static_argnames=_STATIC)
def unit_states(h, g=None, z=None, *, activation=None, dead_eps: float = 1e-7, dead_frac: float = 0.95,
                dormant_tau: float = 0.025, sat_tau: float = 1e-4, sat_frac: float = 0.99,
                frozen_eps: float = 0.01, frozen_frac: float = 0.99, clone_threshold: float = 0.95) -> UnitStates:
    """Per-unit state and clone cluster of one layer from h, g = dL/dh, z (each (samples, units)).

    g=None skips "saturated"; z=None or activation=None skips "frozen". Jit- and vmap-able.
    Cost: that of the criteria, dominated by the (units x units) cosine Gram matrix.
    """
    h = check_matrix("h", h)
    state = jnp.full(h.shape[1], ACTIVE, jnp.int32)
    state = jnp.where(dormant_units(h, dormant_tau), DORMANT, state)
    if g is not None:
        state = jnp.where(saturated_units(h, g, sat_tau, sat_frac), SATURATED, state)
    if z is not None and activation is not None:
        state = jnp.where(frozen_units(z, activation, frozen_eps, frozen_frac), FROZEN, state)
    state = jnp.where(dead_units(h, dead_eps, dead_frac), DEAD, state)
    cl = clone_clusters(h, clone_threshold)
    return UnitStates(state=state, cluster=jnp.where(cl.in_cluster, cl.labels, -1))


def _as_records(name, seq, dtype=np.int64):
    arr = np.asarray([np.asarray(a) for a in seq] if isinstance(seq, (list, tuple)) else seq)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"{name} has shape {arr.shape}; expected (records, units)")
    return arr.astype(dtype)


def _runs(column):
    """Run-length encoding of a 1-D array: (values, lengths)."""
    cut = np.flatnonzero(column[1:] != column[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [column.size]])
    return column[starts], ends - starts, ends == column.size


def _transitions(prev, nxt, s):
    counts = np.zeros((s, s), np.int64)
    np.add.at(counts, (prev.ravel(), nxt.ravel()), 1)
    return counts


def _pair_persistence(clusters):
    out = np.full(clusters.shape[0] - 1, np.nan)
    for t in range(clusters.shape[0] - 1):
        a, b = clusters[t], clusters[t + 1]
        iu = np.triu_indices(a.size, 1)
        together = ((a[:, None] == a[None, :]) & (a[:, None] >= 0))[iu]
        if together.any():
            still = ((b[:, None] == b[None, :]) & (b[:, None] >= 0))[iu]
            out[t] = np.mean(still[together])
    return out


def track_fate(states, *, tasks=None, clusters=None) -> dict:
    """Fate statistics over records of one layer.

    states: (records, units) ints in range(len(STATES)) (a list of per-record arrays is fine).
    tasks: (records,) task id of each record, or None (one task); the step from record t to t+1
      is "at a switch" when the ids differ.
    clusters: (records, units) cluster labels (-1 = no clone), or None.

    Returns a dict of NumPy arrays / dicts:
      state_names; fractions (records, S); transitions, transitions_within_task,
      transitions_at_switch (S, S) counts of state[t] -> state[t+1] over units;
      dwell {state: {"lengths", "censored"}} run lengths in records (censored = still running at
      the last record); dwell_mean {state: mean of uncensored runs, NaN if none};
      revivals (units,) count of dead -> not-dead steps; revivals_at_switch (int);
      reactivations (units,) count of non-active -> active steps; ever {state: fraction of units
      ever in it}; dead_persistence (records-1,) fraction of units dead at t-1 still dead at t
      (NaN where none was dead); and with clusters: clone_fraction (records,),
      clone_pair_persistence (records-1,) fraction of co-clustered pairs still co-clustered
      (NaN where none), clone_joins / clone_leaves (records-1,) units entering / leaving clusters,
      clone_dwell like dwell for the in-cluster state.
    """
    st = _as_records("states", states)
    r, u = st.shape
    s = len(STATES)
    if st.min() < 0 or st.max() >= s:
        raise InputError(f"states hold values in [{st.min()}, {st.max()}]; expected 0..{s - 1}")
    task = np.zeros(r, np.int64) if tasks is None else np.asarray(tasks)
    if task.shape != (r,):
        raise InputError(f"tasks has shape {task.shape}; expected ({r},)")
    switch = task[1:] != task[:-1]
    prev, nxt = st[:-1], st[1:]
    out = {
        "state_names": STATES,
        "fractions": np.stack([np.mean(st == k, axis=1) for k in range(s)], axis=1),
        "transitions": _transitions(prev, nxt, s),
        "transitions_within_task": _transitions(prev[~switch], nxt[~switch], s),
        "transitions_at_switch": _transitions(prev[switch], nxt[switch], s),
    }
    dwell = {name: {"lengths": [], "censored": []} for name in STATES}
    for j in range(u):
        values, lengths, censored = _runs(st[:, j])
        for v, n, c in zip(values, lengths, censored):
            dwell[STATES[v]]["lengths"].append(n)
            dwell[STATES[v]]["censored"].append(c)
    for d in dwell.values():
        d["lengths"] = np.asarray(d["lengths"], np.int64)
        d["censored"] = np.asarray(d["censored"], bool)
    out["dwell"] = dwell
    out["dwell_mean"] = {
        k: float(np.mean(d["lengths"][~d["censored"]])) if np.any(~d["censored"]) else float("nan")
        for k, d in dwell.items()
    }
    revive = (prev == DEAD) & (nxt != DEAD)
    out["revivals"] = revive.sum(axis=0)
    out["revivals_at_switch"] = int(revive[switch].sum())
    out["reactivations"] = ((prev != ACTIVE) & (nxt == ACTIVE)).sum(axis=0)
    out["ever"] = {name: float(np.mean(np.any(st == k, axis=0))) for k, name in enumerate(STATES)}
    dead_prev = (prev == DEAD).sum(axis=1)
    both = ((prev == DEAD) & (nxt == DEAD)).sum(axis=1)
    out["dead_persistence"] = np.where(dead_prev > 0, both / np.maximum(dead_prev, 1), np.nan)
    if clusters is not None:
        cl = _as_records("clusters", clusters)
        if cl.shape != st.shape:
            raise InputError(f"clusters has shape {cl.shape}; expected {st.shape} like states")
        inside = cl >= 0
        out["clone_fraction"] = inside.mean(axis=1)
        out["clone_pair_persistence"] = _pair_persistence(cl)
        out["clone_joins"] = (~inside[:-1] & inside[1:]).sum(axis=1)
        out["clone_leaves"] = (inside[:-1] & ~inside[1:]).sum(axis=1)
        cdw = {"lengths": [], "censored": []}
        for j in range(u):
            values, lengths, censored = _runs(inside[:, j])
            cdw["lengths"] += list(lengths[values])
            cdw["censored"] += list(censored[values])
        out["clone_dwell"] = {"lengths": np.asarray(cdw["lengths"], np.int64),
                              "censored": np.asarray(cdw["censored"], bool)}
    return out
