"""Option resolution (defaults <- preset <- explicit), presets, and bad input -> InputError with
one line naming the bad value."""

import jax
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

PAPER = {
    "mlp": dict(widths=(128,) * 5, activation="relu", norm="batch", dropout=0.2),
    "cnn": dict(channels=(64, 128, 256), fc_widths=(512,), activation="relu", norm="batch",
                dropout=0.1),
    "resnet18": dict(base_channels=64, stages=(2, 2, 2, 2), activation="relu", norm="batch",
                     dropout=0.1),
    "vit": dict(patch_size=8, dim=384, depth=6, heads=6, mlp_ratio=4.0, activation="gelu",
                norm="layer", dropout=0.1, attention_dropout=0.1),
}
COMMON = dict(num_outputs=10, norm_affine=True, norm_after_activation=False)


def test_families_and_presets():
    assert pdx.models.FAMILIES == ("mlp", "cnn", "resnet18", "vit")
    assert set(pdx.models.PRESETS) == set(pdx.models.FAMILIES)
    for fam in pdx.models.FAMILIES:
        assert {"paper", "small", "tiny"} <= set(pdx.models.PRESETS[fam])
        want = {**COMMON, **PAPER[fam]}
        assert pdx.models.create(fam).options == want
        assert pdx.models.create(fam, preset="paper").options == want
        assert pdx.models.PRESETS[fam]["paper"] == want
        for preset, opts in pdx.models.PRESETS[fam].items():
            assert set(opts) == set(want), (fam, preset)
    assert pdx.models.PRESETS["mlp"]["small"]["widths"] == (64, 64, 64)
    assert pdx.models.PRESETS["cnn"]["small"]["channels"] == (16, 32, 64)
    assert pdx.models.PRESETS["cnn"]["small"]["fc_widths"] == (128,)
    assert pdx.models.PRESETS["resnet18"]["small"]["base_channels"] == 8
    small_vit = pdx.models.PRESETS["vit"]["small"]
    assert (small_vit["dim"], small_vit["depth"], small_vit["heads"], small_vit["patch_size"]) \
        == (64, 2, 4, 4)


def test_explicit_options_override_preset_and_are_normalised():
    m = pdx.models.create("mlp", preset="small", widths=[8, 9], dropout=0, activation="tanh")
    assert m.options["widths"] == (8, 9) and m.options["dropout"] == 0.0
    assert m.activation == "tanh" and list(m.layer_kinds) == ["hidden_0", "hidden_1"]
    assert m.options["norm"] == "batch"          # from the preset / defaults


def test_small_presets_fit_digits_and_mnist1d():
    k = jax.random.PRNGKey(0)
    vit = pdx.models.create("vit", "small")      # same model as the init test: init compiled once
    x = np.zeros((2, 8, 8, 1), np.float32)       # sklearn digits
    assert vit.apply(vit.init(k, x), x).logits.shape == (2, 10)
    mlp = pdx.models.create("mlp", "small", num_outputs=3)
    x = np.zeros((2, 40), np.float32)            # mnist1d vectors
    assert mlp.apply(mlp.init(k, x), x).logits.shape == (2, 3)


BAD = [
    (("mlpp",), {}, "mlpp"),
    (("mlp",), {"preset": "huge"}, "huge"),
    (("mlp",), {"channels": (4,)}, "channels"),
    (("cnn",), {"widths": (4,)}, "widths"),
    (("vit",), {"base_channels": 4}, "base_channels"),
    (("mlp",), {"activation": "swish"}, "swish"),
    (("mlp",), {"norm": "group"}, "group"),
    (("mlp",), {"widths": (16, 0)}, "(16, 0)"),
    (("mlp",), {"widths": (16, -3)}, "-3"),
    (("mlp",), {"widths": ()}, "()"),
    (("mlp",), {"widths": 16}, "16"),
    (("cnn",), {"channels": (4, 2.5)}, "2.5"),
    (("mlp",), {"dropout": 1.0}, "1.0"),
    (("mlp",), {"dropout": -0.1}, "-0.1"),
    (("vit",), {"attention_dropout": 1.5}, "1.5"),
    (("mlp",), {"num_outputs": 0}, "0"),
    (("mlp",), {"norm_affine": "yes"}, "yes"),
    (("vit",), {"dim": 10, "heads": 3}, "heads=3"),
    (("vit",), {"patch_size": 0}, "patch_size=0"),
    (("vit",), {"mlp_ratio": -1.0}, "-1.0"),
    (("resnet18",), {"base_channels": 4.0}, "4.0"),
    (("resnet18",), {"norm_after_activation": True}, "norm_after_activation=True"),
]


@pytest.mark.parametrize("args,kwargs,needle", BAD, ids=[b[2] for b in BAD])
def test_bad_options_raise_input_error(args, kwargs, needle):
    with pytest.raises(InputError) as info:
        pdx.models.create(*args, **kwargs)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg, msg


def test_bad_input_shapes_raise_input_error():
    k = jax.random.PRNGKey(0)
    vit = pdx.models.create("vit", "tiny")
    with pytest.raises(InputError, match="10x10"):
        vit.init(k, np.zeros((2, 10, 10, 1), np.float32))
    cnn = pdx.models.create("cnn", "tiny")
    with pytest.raises(InputError, match=r"\(2, 40\)"):
        cnn.init(k, np.zeros((2, 40), np.float32))
    with pytest.raises(InputError, match="too small"):
        cnn.init(k, np.zeros((2, 3, 3, 1), np.float32))


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        pdx.models.create("transformer")
