"""Random crop + flip: every output is a crop of the zero-padded (maybe flipped) input."""

import jax
import numpy as np
import pytest

import plasticity_dynamics as pdx


def _candidates(img, pad):
    h, w = img.shape[:2]
    out = []
    for flipped in (img, img[:, ::-1]):
        p = np.pad(flipped, ((pad, pad), (pad, pad), (0, 0)))
        out += [p[i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return out


@pytest.mark.parametrize("pad", [0, 2])
def test_augment_outputs_are_crops_of_padded_images(pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 5, 2)).astype(np.float32)
    f = jax.jit(pdx.data.augment, static_argnums=2)
    seen_flip = set()
    for s in range(3):
        y = np.asarray(f(jax.random.PRNGKey(s), x, pad))
        assert y.shape == x.shape and y.dtype == x.dtype
        for b in range(len(x)):
            matches = [k for k, c in enumerate(_candidates(x[b], pad)) if np.array_equal(c, y[b])]
            assert matches, f"output {b} is not a crop of the padded input"
            seen_flip.add(matches[0] >= (2 * pad + 1) ** 2)
    assert seen_flip == {True, False}


def test_normalisation_constants_follow_the_paper():
    assert pdx.data.NORMALIZATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert pdx.data.NORMALIZATION["tinyimagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
