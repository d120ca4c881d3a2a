"""Session fixtures for the manifolds tests (helpers live in _manifolds_testkit)."""

import pytest

import plasticity_dynamics as pdx
from _manifolds_testkit import FAMILIES, make_net


@pytest.fixture(scope="session")
def nets():
    """family -> (model, variables, x), built once."""
    return {f: make_net(f) for f in FAMILIES}


@pytest.fixture(scope="session")
def expanded(nets):
    """family -> (wide_model, wide_variables, partition) for factor 2."""
    return {f: pdx.manifolds.expand(m, v, 2) for f, (m, v, _) in nets.items()}
