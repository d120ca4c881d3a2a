"""Theory of the rank-plasticity tension (PAPER.md §2): Hermite kernels, rank bounds, freezing.

Everything is float64 NumPy (never JAX's x64 switch). An activation is given as a name from
:data:`ACTIVATIONS` (relu, leaky_relu, tanh, sigmoid, gelu, elu, selu, linear) or as a modulation
``(name, a, b)`` meaning ψ(z) = φ(a z + b) of z ~ N(0, 1) — a pre-activation with mean b and
standard deviation a > 0.

>>> import plasticity_dynamics as pdx
>>> round(pdx.theory.alpha("relu"), 6)            # π / (2(π − 1))
0.733471
>>> K = pdx.theory.kernel("tanh"); float(K(0.0)), float(K(1.0))
(0.0, 1.0)
>>> round(pdx.theory.frozen_probability("relu", a=1.0, b=-1.0), 6)   # Φ(1)
0.841345

Modules: ``activations`` (the float64 table), ``quadrature`` (Gaussian rules), ``hermite``
(coefficients, K_φ, α, γ_φ, κ_φ), ``rank`` (er₂, Shannon rank, Ψ, rank-gain bound, random
correlation matrices and paths), ``frozen`` (P(|f'| < ε)).
"""

from plasticity_dynamics.theory.activations import ACTIVATIONS as ACTIVATIONS
from plasticity_dynamics.theory.activations import Activation as Activation
from plasticity_dynamics.theory.frozen import frozen_probability as frozen_probability
from plasticity_dynamics.theory.hermite import HermiteKernel as HermiteKernel
from plasticity_dynamics.theory.hermite import alpha as alpha
from plasticity_dynamics.theory.hermite import gamma as gamma
from plasticity_dynamics.theory.hermite import hermite_coefficients as hermite_coefficients
from plasticity_dynamics.theory.hermite import kappa as kappa
from plasticity_dynamics.theory.hermite import kernel as kernel
from plasticity_dynamics.theory.rank import correlation_path as correlation_path
from plasticity_dynamics.theory.rank import decorrelation_potential as decorrelation_potential
from plasticity_dynamics.theory.rank import effective_rank_shannon as effective_rank_shannon
from plasticity_dynamics.theory.rank import er2 as er2
from plasticity_dynamics.theory.rank import kernel_matrix as kernel_matrix
from plasticity_dynamics.theory.rank import random_correlation_matrix as random_correlation_matrix
from plasticity_dynamics.theory.rank import rank_gain as rank_gain
from plasticity_dynamics.theory.rank import rank_gain_bound as rank_gain_bound

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "HermiteKernel",
    "alpha",
    "correlation_path",
    "decorrelation_potential",
    "effective_rank_shannon",
    "er2",
    "frozen_probability",
    "gamma",
    "hermite_coefficients",
    "kappa",
    "kernel",
    "kernel_matrix",
    "random_correlation_matrix",
    "rank_gain",
    "rank_gain_bound",
]
