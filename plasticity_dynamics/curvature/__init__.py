"""Curvature of the loss around LoP manifolds, and escape from them.

Hessian-vector products, Krylov eigensolvers inside jit, the Hessian restricted to a
manifold's normal space with a stable / unstable / saddle / degenerate verdict (PAPER.md §1.6,
Definition A.2), the linearised optimiser step on (params, optimiser state) and its normal
spectral radius, escape experiments, stochastic trace / spectral-density estimates (SLQ, KPM,
Hutchinson, Hutch++), the empirical NTK of a batch (and its normal restriction), finite-time
Lyapunov exponents of the normal dynamics, per-layer (block) spectra and principal angles.
Manifolds are seen only through :class:`ManifoldLike` (``normal``, ``normal_dim``, ...).
"""

from ._density import (Quadrature, SpectralDensity, TraceEstimate, hutchinson_trace,
                       hutchinson_trace_fn, slq_density, slq_density_fn)
from ._escape import EscapeResult, escape, escape_run_fn, fit_growth_rate
from ._hvp import batched_hvp, dense_hessian, gnvp, hvp
from ._krylov import (ArnoldiResult, LanczosResult, arnoldi, arnoldi_ritz, lanczos,
                      lanczos_ritz, lobpcg_lowest)
from ._kpm import (ChebyshevMoments, KPMDensity, hutchpp_trace, hutchpp_trace_fn, kpm_density,
                   kpm_density_fn)
from ._lyapunov import (GrowthCurve, LyapunovData, LyapunovResult, normal_growth, normal_lyapunov,
                        normal_lyapunov_fn)
from ._ntk import NTKData, NTKSpectrum, ntk_spectrum, ntk_spectrum_fn
from ._protocol import ManifoldLike
from ._spectrum import (Spectrum, SpectrumData, classify, normal_hvp, normal_spectrum,
                        normal_spectrum_fn)
from ._update_map import (GrowthData, GrowthFactor, UpdateMapJacobian, update_map_jacobian,
                          update_map_radius, update_map_radius_fn)
from ._subspace import (BlockRestriction, block_spectrum, layer_mask, layer_names, layer_spectra,
                        principal_angles)

__all__ = [
    "hvp", "batched_hvp", "gnvp", "dense_hessian",
    "lanczos", "lanczos_ritz", "LanczosResult", "arnoldi", "arnoldi_ritz", "ArnoldiResult",
    "lobpcg_lowest",
    "normal_spectrum", "normal_spectrum_fn", "normal_hvp", "Spectrum", "SpectrumData", "classify",
    "update_map_jacobian", "UpdateMapJacobian", "update_map_radius", "update_map_radius_fn", "GrowthFactor", "GrowthData",
    "escape", "escape_run_fn", "EscapeResult", "fit_growth_rate",
    "slq_density", "slq_density_fn", "SpectralDensity", "Quadrature", "hutchinson_trace",
    "hutchinson_trace_fn", "TraceEstimate",
    "kpm_density", "kpm_density_fn", "KPMDensity", "ChebyshevMoments", "hutchpp_trace",
    "hutchpp_trace_fn",
    "ntk_spectrum", "ntk_spectrum_fn", "NTKSpectrum", "NTKData",
    "normal_lyapunov", "normal_lyapunov_fn", "LyapunovResult", "LyapunovData", "normal_growth",
    "GrowthCurve",
    "principal_angles", "block_spectrum", "layer_spectra", "layer_mask", "layer_names",
    "BlockRestriction",
    "ManifoldLike",
]
