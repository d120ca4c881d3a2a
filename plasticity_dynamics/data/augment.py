"""Normalisation constants and the random-crop + flip augmentation (PAPER.md 5.2).

``augment`` is a pure JAX function (jit / vmap / scan safe): per image an
independent crop offset in [0, 2*pad]^2 of the zero-padded image and a
horizontal flip with probability 1/2, as torchvision's
``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()``. The authors'
extra ``ColorJitter(0.1, 0.1, 0.1)`` for Tiny ImageNet is not reproduced.
Padding value is 0 in whatever space ``x`` is in (torchvision pads the raw
image, i.e. before normalisation; on normalised data 0 is the dataset mean).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# (mean, std) per channel. cifar10 and tinyimagenet as in the authors' code (PAPER.md 5.2);
# cifar100 and mnist use the widely used constants of those datasets (not stated in the paper).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalize(x: np.ndarray, name: str) -> np.ndarray:
    """(x - mean) / std with the channel constants of ``name`` (NHWC, last axis = channel)."""
    mean, std = NORMALIZATION[name]
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def augment(key, x, pad: int):
    """Random crop (zero padding ``pad``) and horizontal flip of a batch.

    Args:
      key: PRNG key.
      x: (B, H, W, C) images.
      pad: static int >= 0; 0 only flips.
    Returns:
      (B, H, W, C) array, same dtype. Cost: one padded copy of the batch.
    """
    b, h, w, _ = x.shape
    k_off, k_flip = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    if pad == 0:
        return x
    offsets = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)
