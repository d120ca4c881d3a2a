"""Continual backprop (CBP; Dohare et al. 2024, PAPER.md 3 and 5.7) as a pure intervention.

After every optimiser step, for every hidden layer (see :mod:`.units` for mlp / cnn):

1. age_i += 1; running mean of the activation f_i <- eta f_i + (1 - eta) mean_batch(h_i),
   bias-corrected f^_i = f_i / (1 - eta^age_i).
2. instantaneous utility, with W_out the outgoing and W_in the incoming weights,
   - "contribution" (default):  mean_batch |h_i| * sum|W_out[i, :]|
   - "adaptable_contribution":  mean_batch |h_i - f^_i| * sum|W_out[i, :]| / sum|W_in[:, i]|
     (the authors' bit-flipping code; PAPER.md 5.7; sum|W_in| is clamped at 1e-12);
   u_i <- eta u_i + (1 - eta) inst_i, bias-corrected u^_i = u_i / (1 - eta^age_i).
3. eligible units: age_i > maturity_threshold. Replacement budget: a running count
   c += replacement_rate * (#eligible); n = floor(c) units are replaced and c -= n
   (fractional accumulation, Dohare et al.). Parity option ``min_one_per_step``: n =
   max(1, int(replacement_rate * width)) whenever some unit is eligible (the authors'
   bit-flipping code, which replaces one unit at every step once units are mature).
4. the n eligible units with the lowest u^ are replaced: next-layer bias
   b_next += W_out[i, :] * f^_i (so the network function is unchanged when h_i equals
   its mean), outgoing weights 0, incoming weights re-drawn from U(-b, b) with
   b = gain * sqrt(3 / fan_in) ("kaiming_uniform", gain sqrt(2) for ReLU) or
   b = 1 / sqrt(fan_in) ("pytorch_default"), incoming bias 0; u, f, age reset to 0.
   All layers decide from the same pre-replacement network (statistics first, surgery after).
   The replaced entries of every params-shaped optimiser buffer (Adam moments, momentum)
   are zeroed, as Dohare et al.'s AdamGnT does; counts are kept. A norm layer between
   the unit and its activation gets scale 1, bias 0 for the unit, and its running statistics
   mean 0, var 1 (the bias correction is then exact only without normalisation). The authors' extra zeroing of the whole
   first-layer bias vector (a bug, PAPER.md 5.7) is not reproduced.

Conv layers: a unit is a channel, statistics average over batch and space; the bias
correction ignores zero padding at borders (exact for unit-constant maps only inside).
State: per layer {"util", "mean", "age", "accum", "replaced"} (replaced = cumulative count).
Cost per step: O(params of the hidden layers) plus one argsort per layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..errors import InputError, check_choice, check_positive, check_range
from .units import activations_2d, all_true, mask_opt_state, outgoing_abs_sum, outgoing_sum, replace_units, \
    unit_count, unit_layers

UTILITIES = ("contribution", "adaptable_contribution")
INITS = ("kaiming_uniform", "pytorch_default")


def cbp(replacement_rate: float = 1e-4, decay: float = 0.99, maturity_threshold: int = 100,
        utility: str = "contribution", init: str = "kaiming_uniform", gain: float = math.sqrt(2.0),
        min_one_per_step: bool = False, reset_opt_state: bool = True):
    """Return (init, apply) of continual backprop; see the module docstring."""
    check_range("replacement_rate", replacement_rate, 0.0, 1.0, high_inclusive=True)
    check_range("decay", decay, 0.0, 1.0)
    check_positive("maturity_threshold", maturity_threshold, integer=True, allow_zero=True)
    check_choice("utility", utility, UTILITIES)
    check_choice("init", init, INITS)
    check_positive("gain", gain)
    return cbp_fns(replacement_rate, decay, maturity_threshold, utility, init, gain, min_one_per_step,
                   reset_opt_state)


def cbp_fns(replacement_rate, decay, maturity_threshold: int, utility: str, init: str, gain: float,
            min_one_per_step: bool, reset_opt_state: bool):
    """:func:`cbp` without the checks: ``replacement_rate`` (unless ``min_one_per_step``, which
    turns it into a static unit count) and ``decay`` may be traced scalars, one per vmapped lane."""

    def init_state(params, key):
        del key
        state = {}
        for layer in unit_layers(params):
            d = unit_count(params, layer)
            state[layer.name] = {"util": jnp.zeros(d, jnp.float32), "mean": jnp.zeros(d, jnp.float32),
                                 "age": jnp.zeros(d, jnp.int32), "accum": jnp.zeros([], jnp.float32),
                                 "replaced": jnp.zeros([], jnp.int32)}
        return state

    def apply(variables, opt_state, state, activations, step, key, task_start=False):
        """``variables``: the model's variables dict ("params", optionally "batch_stats")."""
        del step, task_start
        params = variables["params"]
        if activations is None:
            raise InputError("intervention 'cbp' needs the training batch activations")
        layers = unit_layers(params)
        # Pass 1: statistics and the units to replace, all from the same (pre-replacement) network.
        decisions, new_state = [], {}
        for layer in layers:
            if layer.act_key not in activations:
                raise InputError(f"intervention 'cbp' needs activation {layer.act_key!r}; got {', '.join(activations)}")
            st = state[layer.name]
            h = activations_2d(activations[layer.act_key]).astype(jnp.float32)
            d = h.shape[-1]
            w_in, w_next = params[layer.name]["kernel"], params[layer.next_name]["kernel"]
            age = st["age"] + 1
            corr = 1.0 - jnp.power(jnp.asarray(decay, jnp.float32), age.astype(jnp.float32))
            mean = decay * st["mean"] + (1.0 - decay) * h.mean(axis=0)
            mean_hat = mean / corr
            out_mag = outgoing_abs_sum(w_next, layer.next_kind, d)
            if utility == "contribution":
                inst = jnp.abs(h).mean(axis=0) * out_mag
            else:
                in_mag = jnp.abs(w_in).reshape(-1, d).sum(axis=0)
                inst = jnp.abs(h - mean_hat).mean(axis=0) * out_mag / jnp.maximum(in_mag, 1e-12)
            util = decay * st["util"] + (1.0 - decay) * inst
            util_hat = util / corr
            eligible = age > maturity_threshold
            n_elig = eligible.sum()
            if min_one_per_step:
                n_rep = jnp.where(n_elig > 0, max(1, int(replacement_rate * d)), 0)
                accum = st["accum"]
            else:
                accum = st["accum"] + replacement_rate * n_elig.astype(jnp.float32)
                n_rep = jnp.floor(accum).astype(jnp.int32)
                accum = accum - n_rep.astype(jnp.float32)
            n_rep = jnp.minimum(n_rep, n_elig)
            rank = jnp.argsort(jnp.argsort(jnp.where(eligible, util_hat, jnp.inf), stable=True), stable=True)
            replace = eligible & (rank < n_rep)
            shift = outgoing_sum(jnp.where(replace, mean_hat, 0.0), w_next, layer.next_kind)
            decisions.append((replace, shift))
            new_state[layer.name] = {"util": jnp.where(replace, 0.0, util), "mean": jnp.where(replace, 0.0, mean),
                                     "age": jnp.where(replace, 0, age), "accum": accum,
                                     "replaced": st["replaced"] + replace.sum().astype(jnp.int32)}
        # Pass 2: surgery, input side first (a unit's new incoming column overrides the zeroed
        # outgoing row of a replaced unit below it, whose bias correction went to the same layer).
        keep = all_true(params)
        for li, (layer, (replace, shift)) in enumerate(zip(layers, decisions)):
            w_in = params[layer.name]["kernel"]
            fan_in = math.prod(w_in.shape[:-1])
            bound = gain * math.sqrt(3.0 / fan_in) if init == "kaiming_uniform" else 1.0 / math.sqrt(fan_in)
            fresh = jax.random.uniform(jax.random.fold_in(key, li), w_in.shape, w_in.dtype, -bound, bound)
            variables, keep = replace_units(variables, keep, layer, replace, fresh, 0.0, add_to_next_bias=shift)
            params = variables["params"]
        if reset_opt_state:
            opt_state = mask_opt_state(opt_state, params, keep)
        return variables, opt_state, new_state

    return init_state, apply
