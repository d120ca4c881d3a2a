"""Synthetic regression data: bit flipping (Dohare et al.) and a random teacher network.

Bit flipping ("slowly-changing regression", PAPER.md 5.7). Input x in {0,1}^m
followed by a constant bias bit 1, so x has m + 1 entries: the first f bits are
the *flipping* bits (constant except that every T steps one of them, chosen
uniformly, is inverted), the other m - f bits are i.i.d. Bernoulli(1/2) at every
step. Target: a fixed net of ``hidden`` linear threshold units (LTU),

    h_i = 1[w_i . x - theta_i > 0],   y = w_out . h + b_out,
    theta_i = c * beta - S_i,  S_i = #{j : w_ij < 0} - 0.5 * w_{i, m+1},

with w_i in {-1, +1}^{m+1} (the count S_i runs over all m + 1 input weights,
the last one being the bias weight), w_out in {-1, +1}^hidden, b_out in {-1, +1}.
``threshold="paper"`` (default) uses c = m as in the paper text; ``"code"``
uses c = m + 1 as in the authors' code. With beta = 0.7 and integer w.x the
pre-activation is never exactly 0 in either variant, so the strict ">" of the
code and a Heaviside H(0) = 0 agree.

Teacher: a fixed random 2-layer network y = act(x W1 + b1) W2 + b2 with
W1 ~ N(0, 1/d_in), W2 ~ N(0, 1/hidden), b1 = b2 = 0 (not from the paper; a
standard teacher-student regression target).

Everything here is NumPy (float32) except :func:`ltu_apply` / :func:`teacher_apply`,
which accept NumPy or JAX arrays so task streams can call them inside jit.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_choice, check_positive, check_range
from .dataset import Dataset

THRESHOLDS = ("paper", "code")
TEACHER_ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")


def check_bitflip_args(m, f, T, beta, target_hidden, threshold) -> None:
    """InputError for bad bit-flipping sizes (f <= m, T > 0, 0 <= beta <= 1, ...)."""
    check_positive("m", m, integer=True)
    check_positive("f", f, integer=True)
    if f > m:
        raise InputError(f"f={f!r} flipping bits must be <= m={m!r}")
    check_positive("T", T, integer=True)
    check_range("beta", beta, 0.0, 1.0, high_inclusive=True)
    check_positive("target_hidden", target_hidden, integer=True)
    check_choice("threshold", threshold, THRESHOLDS)


def ltu_target(seed: int, m: int, hidden: int, beta: float, threshold: str = "paper") -> dict:
    """Draw the LTU target net; dict of float32 arrays W (hidden, m+1), theta (hidden,), w_out (hidden,), b_out ()."""
    rng = np.random.default_rng([int(seed), 1])
    w = rng.choice(np.array([-1.0, 1.0], np.float32), size=(hidden, m + 1))
    w_out = rng.choice(np.array([-1.0, 1.0], np.float32), size=(hidden,))
    b_out = rng.choice(np.array([-1.0, 1.0], np.float32))
    s = (w < 0).sum(axis=1) - 0.5 * w[:, m]
    c = m if threshold == "paper" else m + 1
    theta = (c * beta - s).astype(np.float32)
    return {"W": w, "theta": theta, "w_out": w_out, "b_out": np.float32(b_out)}


def ltu_apply(target: dict, x):
    """Targets (B,) of the LTU net for inputs x (B, m+1); NumPy or JAX arrays."""
    z = x @ target["W"].T - target["theta"]
    h = (z > 0).astype(x.dtype)
    return h @ target["w_out"] + target["b_out"]


def flip_table(seed: int, f: int, num_periods: int) -> np.ndarray:
    """States of the f flipping bits for periods 0..num_periods-1: (num_periods, f) float32.

    Row 0 is uniform random bits; row k differs from row k-1 in exactly one bit,
    chosen uniformly among the f.
    """
    rng = np.random.default_rng([int(seed), 2])
    table = np.empty((num_periods, f), np.float32)
    table[0] = rng.integers(0, 2, f)
    flips = rng.integers(0, f, max(num_periods - 1, 0))
    for k in range(1, num_periods):
        table[k] = table[k - 1]
        table[k, flips[k - 1]] = 1.0 - table[k, flips[k - 1]]
    return table


def bitflip_inputs(rng: np.random.Generator, flip_bits: np.ndarray, m: int) -> np.ndarray:
    """Inputs (B, m+1) for flipping-bit rows ``flip_bits`` (B, f): random other bits, bias bit 1."""
    b, f = flip_bits.shape
    rand = rng.integers(0, 2, (b, m - f)).astype(np.float32)
    return np.concatenate([flip_bits, rand, np.ones((b, 1), np.float32)], axis=1)


def load_bitflip(data_dir=None, *, num_train: int = 10000, num_test: int = 1000, m: int = 20, f: int = 15,
                 T: int = 10000, beta: float = 0.7, target_hidden: int = 100, threshold: str = "paper",
                 seed: int = 0) -> Dataset:
    """A finite sample of the bit-flipping stream as a Dataset (regression, y (N, 1) float32).

    Train = the first ``num_train`` steps of the stream (flips every T samples);
    test = ``num_test`` inputs with *all* m bits uniform random. For training use
    the ``bitflip`` task stream, which generates the stream on the fly.
    """
    check_bitflip_args(m, f, T, beta, target_hidden, threshold)
    check_positive("num_train", num_train, integer=True)
    check_positive("num_test", num_test, integer=True)
    target = ltu_target(seed, m, target_hidden, beta, threshold)
    table = flip_table(seed, f, num_train // T + 1)
    rng = np.random.default_rng([int(seed), 3])
    xtr = bitflip_inputs(rng, table[np.arange(num_train) // T], m)
    xte = np.concatenate([rng.integers(0, 2, (num_test, m)).astype(np.float32),
                          np.ones((num_test, 1), np.float32)], axis=1)
    return Dataset(xtr, ltu_apply(target, xtr)[:, None], xte, ltu_apply(target, xte)[:, None], num_classes=0,
                   input_shape=(m + 1,), name="bitflip", task="regression",
                   info={"m": m, "f": f, "T": T, "beta": beta, "target_hidden": target_hidden,
                         "threshold": threshold, "seed": seed})


# ---------------------------------------------------------------- teacher network


def teacher_params(seed: int, input_dim: int, hidden: int, num_outputs: int) -> dict:
    """Random teacher: W1 (d, hidden) ~ N(0, 1/d), W2 (hidden, out) ~ N(0, 1/hidden), zero biases."""
    rng = np.random.default_rng([int(seed), 4])
    return {
        "W1": (rng.standard_normal((input_dim, hidden)) / np.sqrt(input_dim)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "W2": (rng.standard_normal((hidden, num_outputs)) / np.sqrt(hidden)).astype(np.float32),
        "b2": np.zeros(num_outputs, np.float32),
    }


def teacher_apply(params: dict, x, activation: str = "tanh"):
    """Teacher outputs (B, num_outputs) for inputs x (B, ...) flattened; NumPy or JAX arrays."""
    x = x.reshape(x.shape[0], -1)
    z = x @ params["W1"] + params["b1"]
    if activation == "tanh":
        h = np.tanh(z) if isinstance(z, np.ndarray) else _jnp().tanh(z)
    elif activation == "relu":
        h = z * (z > 0)
    elif activation == "sigmoid":
        h = 1.0 / (1.0 + (np.exp(-z) if isinstance(z, np.ndarray) else _jnp().exp(-z)))
    else:
        h = z
    return h @ params["W2"] + params["b2"]


def _jnp():
    import jax.numpy as jnp

    return jnp


def load_teacher(data_dir=None, *, input_dim: int = 16, hidden: int = 32, num_outputs: int = 1,
                 activation: str = "tanh", num_train: int = 4096, num_test: int = 1024, seed: int = 0) -> Dataset:
    """Gaussian inputs x ~ N(0, I_d) labelled by :func:`teacher_params` (regression, y (N, out))."""
    for name, v in (("input_dim", input_dim), ("hidden", hidden), ("num_outputs", num_outputs),
                    ("num_train", num_train), ("num_test", num_test)):
        check_positive(name, v, integer=True)
    check_choice("activation", activation, TEACHER_ACTIVATIONS)
    params = teacher_params(seed, input_dim, hidden, num_outputs)
    rng = np.random.default_rng([int(seed), 5])
    xtr = rng.standard_normal((num_train, input_dim)).astype(np.float32)
    xte = rng.standard_normal((num_test, input_dim)).astype(np.float32)
    return Dataset(xtr, teacher_apply(params, xtr, activation).astype(np.float32), xte,
                   teacher_apply(params, xte, activation).astype(np.float32), num_classes=0,
                   input_shape=(input_dim,), name="teacher", task="regression",
                   info={"hidden": hidden, "activation": activation, "seed": seed})
