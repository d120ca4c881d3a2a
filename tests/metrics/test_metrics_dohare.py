"""Dohare et al. (Nature 2024) definitions against a float64 NumPy oracle written here from the
definitions (values, not code): low activity over every image x position of a conv map, ranks of
every row, the matrix_rank cutoff; plus the names that state rows, cutoff and source, and
``partitions=`` given a Partition from pdx.manifolds.expand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx

m = pdx.metrics
EPS32 = np.finfo(np.float32).eps


# ----------------------------------------------------------------------------- oracle
def dohare_low_activity(a, frac=0.01):
    """Fraction of channels whose entries (over images and positions) are non-zero on fewer than
    ``frac`` of them. a: (B, H, W, C) or (B, C)."""
    a = np.asarray(a, np.float64)
    share = np.mean(a != 0, axis=tuple(range(a.ndim - 1)))
    return float(np.mean(share < frac))


def dohare_ranks(h, prop=0.99):
    """Effective, approximate (sigma^2 mass), srank (sigma mass) and matrix rank of every row."""
    s = np.linalg.svd(np.asarray(h, np.float64), compute_uv=False)
    p = s / np.sum(np.abs(s))
    p = p[p > 0]
    eff = float(np.exp(-np.sum(p * np.log(p))))

    def mass(w):
        w = np.sort(w / w.sum())[::-1]
        k, acc = 0, 0.0
        while acc < prop:
            acc += w[k]
            k += 1
        return k

    tol = s.max() * max(h.shape) * EPS32
    return {"effective_rank": eff, "approx_rank": mass(s**2), "srank": mass(s), "hard_rank": int(np.sum(s > tol)),
            "sigma": s, "tol": tol}


def relu_layer(rng, n, d, r, dead=0, decades=3.0):
    u, _ = np.linalg.qr(rng.normal(size=(n, r)))
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    h = np.maximum((u * np.logspace(0, -decades, r)) @ v.T, 0.0)
    h[:, :dead] = 0.0
    return h.astype(np.float32)


# ----------------------------------------------------------------------------- conv rule
def test_conv_low_activity_counts_every_position_and_per_image_keeps_its_name():
    rng = np.random.default_rng(0)
    b, hw, c = 20, 16, 6  # 8 x 16 = 128 positions per image, 2560 entries per channel
    a = rng.random((b, 8, hw, c)).astype(np.float32) + 0.1
    a[..., 0] = 0.0
    a[:, 3, 5, 0] = 1.0  # channel 0: active at 1 of 128 positions in every image
    a[..., 1] = 0.0
    a[:2, 0, 0, 1] = 1.0  # channel 1: active in 2 of 20 images at one position
    a[..., 2] = 0.0  # channel 2: never active
    out = m.metrics_from_arrays({"conv": a}, layer_kinds={"conv": "conv"})
    want = dohare_low_activity(a)
    assert want == pytest.approx(3 / 6)  # the oracle sees channels 0, 1 and 2 as dormant
    assert out["low_activity_frac@0.01"]["conv"] == pytest.approx(want)
    per_image = dohare_low_activity(a.mean(axis=(1, 2)))  # channel averaged over space per image
    assert per_image == pytest.approx(1 / 6)  # only channel 2
    assert out["low_activity_frac_per_image@0.01"]["conv"] == pytest.approx(per_image)
    # pool=True changes the samples of the other metrics, not Dohare's all-positions rule
    pooled = m.metrics_from_arrays({"conv": a}, layer_kinds={"conv": "conv"}, options=m.MetricOptions(pool=True))
    assert pooled["low_activity_frac@0.01"]["conv"] == pytest.approx(want)
    # dense layers have one reading only
    dense = m.metrics_from_arrays({"fc": a.reshape(-1, c)}, layer_kinds={"fc": "dense"})
    assert dense["low_activity_frac@0.01"]["fc"] == pytest.approx(want)
    assert "low_activity_frac_per_image@0.01" not in dense


# ----------------------------------------------------------------------------- ranks, every row
@pytest.mark.parametrize("shape,rank,dead", [((3000, 48), 30, 5), ((40, 200), 25, 10), ((2100, 130), 90, 20)])
def test_ranks_use_every_row_and_match_float64(shape, rank, dead):
    rng = np.random.default_rng(shape[0] + shape[1])
    h = relu_layer(rng, *shape, rank, dead)
    want = dohare_ranks(h)
    s, tol = want["sigma"], want["tol"]
    assert not np.any((s > tol / 3) & (s < 3 * tol)), "planted spectrum must not straddle the cutoff"
    assert float(m.effective_rank(h)) == pytest.approx(want["effective_rank"], rel=2e-5)
    assert int(m.approximate_rank(h)) == want["approx_rank"]
    assert int(m.srank(h)) == want["srank"]
    assert int(m.hard_rank(h)) == want["hard_rank"]
    out = m.metrics_from_arrays({"L": h})
    assert out["effective_rank"]["L"] == pytest.approx(want["effective_rank"], rel=2e-5)
    assert out["approx_rank@0.99"]["L"] == want["approx_rank"]
    assert out["srank@0.99"]["L"] == want["srank"]
    assert out["hard_rank"]["L"] == want["hard_rank"]
    top = np.asarray(m.singular_values(h))[: want["hard_rank"]]
    np.testing.assert_allclose(top, s[: want["hard_rank"]], rtol=0, atol=2e-5 * s[0])


def test_row_sampling_is_explicit_and_named():
    rng = np.random.default_rng(7)
    h = relu_layer(rng, 1500, 40, 40, 0, decades=2.0)
    every = m.metrics_from_arrays({"L": h})
    sampled = m.metrics_from_arrays({"L": h}, options=m.MetricOptions(max_rows=200, rank_seed=3))
    for base in ("effective_rank", "renyi2_rank", "stable_rank", "hard_rank"):
        assert base in every and f"{base}@rows=200" in sampled and base not in sampled
    assert "srank@0.99,rows=200" in sampled and "approx_rank@0.99,rows=200" in sampled
    rows = np.asarray(jax.random.permutation(jax.random.PRNGKey(3), 1500)[:200])
    assert sampled["effective_rank@rows=200"]["L"] == pytest.approx(dohare_ranks(h[rows])["effective_rank"], rel=2e-5)
    assert every["effective_rank"]["L"] == pytest.approx(dohare_ranks(h)["effective_rank"], rel=2e-5)
    # a layer with no more rows than max_rows is not sampled, so its names stay plain
    small = m.metrics_from_arrays({"L": h[:100]}, options=m.MetricOptions(max_rows=200))
    assert "effective_rank" in small and "effective_rank@rows=200" not in small


def test_describe_metrics_states_rows_cutoff_and_source():
    lines = m.describe_metrics().splitlines()
    for base in ("effective_rank", "renyi2_rank", "stable_rank", "srank@0.99", "approx_rank@0.99", "hard_rank"):
        line = next(ln for ln in lines if ln.split()[0] == base)
        assert "rows: every row" in line and "cutoff" in line, line
    for base in ("effective_rank", "srank@0.99", "approx_rank@0.99", "low_activity_frac@0.01"):
        line = next(ln for ln in lines if ln.split()[0] == base)
        assert "shibhansh/loss-of-plasticity" in line and ".py:" in line, line
    assert all("rows:" in ln for ln in lines if "monitored layers" in ln)
    sampled = m.describe_metrics(m.MetricOptions(max_rows=256)).splitlines()
    assert any(ln.startswith("effective_rank@rows=256 ") for ln in sampled)


# ----------------------------------------------------------------------------- partitions
def test_unit_metrics_accepts_a_partition_from_expand():
    model = pdx.models.create("mlp", widths=(6, 5), num_outputs=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (24, 7))
    y = jnp.arange(24) % 3
    v = model.init(jax.random.PRNGKey(1), x)
    wide, wv, part = pdx.manifolds.expand(model, v, 2)
    res = m.unit_metrics(wide, wv, (x, y), partitions=part)
    as_dict = m.unit_metrics(wide, wv, (x, y), partitions={k: part.groups[lu.group] for k, lu in part.layers.items()
                                                           if lu.monitored})
    assert set(res["clone_r2_fwd"]) == set(as_dict["clone_r2_fwd"]) and res["clone_r2_fwd"]
    for layer, value in res["clone_r2_fwd"].items():
        assert value == pytest.approx(1.0, abs=1e-5)  # exact clones after expansion
        assert value == as_dict["clone_r2_fwd"][layer]
    with pytest.raises(pdx.errors.InputError, match="Partition"):
        m.unit_metrics(wide, wv, (x, y), partitions=object())
