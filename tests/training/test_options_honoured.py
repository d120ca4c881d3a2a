"""Every option is honoured or rejected: what does not apply is an InputError naming it, and what
was built (stream, model, optimiser, intervention) is what summary.json describes.

Interventions built by the engine re-draw units from the family's own init (ResNet-18 Kaiming
normal fan-out, ViT truncated normal 0.02), full_reset re-creates the optimiser state (step
count included), and re-drawn units get fresh batch-norm statistics.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plasticity_dynamics.errors import InputError
from plasticity_dynamics.training import Config, build, train
from plasticity_dynamics.training.engine import init_state, make_task_start_fn

TINY = {"model.preset": "tiny", "train.steps_per_task": 4, "record.every": 4, "seeds": 1, "train.batch_size": 8,
        "tasks.metric_batch_size": 16, "record.metrics": False}


@pytest.mark.parametrize("overrides,needle", [
    ({"optim.momentum": 0.9}, "optim.momentum=0.9"),  # adam (the default) has no momentum option
    ({"optim.name": "sgd", "optim.noise_sigma0": 0.05}, "optim.noise_sigma0=0.05"),
    ({"optim.name": "adam", "optim.noise_decay": 0.9}, "optim.noise_decay=0.9"),
    ({"intervention.start_step": 10}, "intervention.start_step"),
    ({"intervention.replacement_rate": 0.1}, "intervention.replacement_rate"),
    ({"record.metrics": False, "record.max_rows": 64}, "record.max_rows"),
    ({"train.epochs_per_task": 2, "train.steps_per_task": 10}, "train.steps_per_task=10"),
])
def test_config_rejects_options_that_do_not_apply(overrides, needle):
    with pytest.raises(InputError) as exc:
        Config().with_overrides(overrides)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("overrides,needle", [
    ({"data.name": "bitflip", "tasks.kind": "bitflip", "tasks.head_zeroing": False}, "head_zeroing"),
    ({"data.name": "bitflip", "tasks.kind": "bitflip", "tasks.num_tasks": 3}, "num_tasks"),
    ({"tasks.kind": "permuted_inputs", "tasks.classes_per_task": 2}, "classes_per_task"),
    ({"tasks.batch_size": 32}, "tasks.batch_size=32"),
    ({"model.num_outputs": 7}, "model.num_outputs=7"),
    ({"intervention.name": "shrink_perturb", "intervention.init_fn": "x"}, "intervention.init_fn"),
])
def test_build_rejects_options_the_components_do_not_read(overrides, needle):
    with pytest.raises(InputError) as exc:
        build(Config().with_overrides({**TINY, **overrides}))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


STREAMS = [("class_split", {}, True), ("class_split", {"tasks.head_zeroing": False}, False),
           ("permuted_inputs", {"tasks.num_tasks": 2}, False), ("permuted_labels", {"tasks.num_tasks": 2}, False),
           ("random_labels", {"tasks.num_tasks": 2}, False), ("teacher", {}, False)]


@pytest.mark.parametrize("kind,extra,zeroes", STREAMS)
def test_stream_description_is_what_the_engine_does(kind, extra, zeroes):
    c = build(Config().with_overrides({**TINY, "tasks.kind": kind, **extra}))
    desc = c.describe()
    assert desc["stream"] == c.stream.describe() and desc["stream"]["kind"] == kind
    assert desc["stream"]["head_zeroing"] is zeroes
    state = init_state(c, 0)
    state["variables"]["params"]["out"] = jax.tree_util.tree_map(jnp.ones_like, state["variables"]["params"]["out"])
    after = make_task_start_fn(c)(state, 0, 1)
    out_zero = all(bool(jnp.all(a == 0)) for a in jax.tree_util.tree_leaves(after["variables"]["params"]["out"]))
    assert out_zero is zeroes


def test_summary_json_says_what_ran(tmp_path):
    cfg = Config().with_overrides({**TINY, "tasks.head_zeroing": False, "optim.name": "noisy_sgd", "optim.lr": 0.01,
                                   "intervention.name": "shrink_perturb", "intervention.every": 2})
    run = train(cfg, out=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stream"]["head_zeroing"] is False
    assert summary["optimizer"] == {"name": "noisy_sgd", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.0,
                                    "noise_sigma0": 0.01, "noise_decay": 0.999}
    assert summary["intervention"]["options"] == {"shrink": 0.9999, "sigma": 1e-4, "every": 2, "at_task_start": False}
    assert summary["model"]["options"]["widths"] == [16, 16]
    assert summary == json.loads(json.dumps(run.summary))


# ----------------------------------------------------------- interventions per family

FAMILIES = {"mlp": {}, "cnn": {"data.name": "digits"}, "resnet18": {"data.name": "digits"},
            "vit": {"data.name": "digits", "model.patch_size": 4}}


def _components(family, **over):
    return build(Config().with_overrides({**TINY, "model.name": family, **FAMILIES[family], **over}))


def _kernels(params):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat if jax.tree_util.keystr(p).endswith("['kernel']")}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shrink_perturb_redraws_from_the_family_init(family):
    c = _components(family, **{"intervention.name": "shrink_perturb", "intervention.shrink": 0.0,
                               "intervention.sigma": 1.0})
    state = init_state(c, 0)
    drawn, _, _ = c.intervention.apply(state["variables"], state["opt_state"], state["iv_state"], None, 0,
                                       jax.random.PRNGKey(7))
    kernels = _kernels(drawn["params"])
    for path, k in kernels.items():
        if family == "resnet18" and k.ndim == 4:  # Kaiming normal, fan-out mode: std sqrt(2 / (kh kw cout))
            want = math.sqrt(2.0 / (k.shape[0] * k.shape[1] * k.shape[3]))
            assert abs(k.std() / want - 1) < 0.25, (path, k.std(), want)
        elif family == "vit" and "out" not in path:
            # truncated normal of std 0.02 at +-2 sigma of the underlying normal: 0.02 / 0.8796 * 2 = 0.0455
            assert 0.016 < k.std() < 0.024 and np.abs(k).max() <= 0.0455, (path, k.std())
        elif family in ("mlp", "cnn") and k.size > 100:  # PyTorch default: U(+-1/sqrt(fan_in))
            bound = 1 / math.sqrt(math.prod(k.shape[:-1]))
            assert np.abs(k).max() <= bound + 1e-6 and k.std() > 0.4 * bound, path
    assert jax.tree_util.tree_structure(drawn) == jax.tree_util.tree_structure(state["variables"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_reset_recreates_the_optimiser_state_and_statistics(family):
    c = _components(family, **{"intervention.name": "full_reset"})
    state = init_state(c, 0)
    params = state["variables"]["params"]
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    opt_state = state["opt_state"]
    for _ in range(3):
        _, opt_state = c.optimizer.update(grads, opt_state, params)
    counts = [x for x in jax.tree_util.tree_leaves(opt_state) if x.dtype == jnp.int32 and x.ndim == 0]
    assert counts and all(int(n) == 3 for n in counts)
    variables = state["variables"]
    if "batch_stats" in variables:
        variables = {**variables, "batch_stats": jax.tree_util.tree_map(lambda a: a + 5.0, variables["batch_stats"])}
    new_vars, new_opt, _ = c.intervention.on_task_start(variables, opt_state, state["iv_state"], jax.random.PRNGKey(3))
    fresh = c.optimizer.init(new_vars["params"])
    for a, b in zip(jax.tree_util.tree_leaves(new_opt), jax.tree_util.tree_leaves(fresh)):
        np.testing.assert_array_equal(a, b)  # moments 0 and step count 0, as a new optimiser
    for path, leaf in jax.tree_util.tree_flatten_with_path(new_vars.get("batch_stats", {}))[0]:
        want = 1.0 if jax.tree_util.keystr(path).endswith("['var']") else 0.0
        np.testing.assert_array_equal(leaf, want)
    assert any(np.any(a != b) for a, b in zip(jax.tree_util.tree_leaves(new_vars["params"]),
                                               jax.tree_util.tree_leaves(params)))


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_redo_resets_the_norm_statistics_of_recycled_units(family):
    c = _components(family, **{"model.norm": "batch", "intervention.name": "redo", "intervention.every": 1,
                               "intervention.tau": 0.1})
    state = init_state(c, 0)
    variables = state["variables"]
    stats = jax.tree_util.tree_map(lambda a: a + 5.0, variables["batch_stats"])
    variables = {**variables, "batch_stats": stats}
    first = "hidden_0" if family == "mlp" else "conv_0"
    width = stats["norm_0"]["mean"].shape[0]
    shape = (8, width) if family == "mlp" else (8, 4, 4, width)
    h = np.ones(shape, np.float32)
    h[..., 1] = 0.0  # unit 1 of the first layer is dormant
    acts = {first: jnp.asarray(h)}  # every other layer fully active
    if family == "mlp":
        acts["hidden_1"] = jnp.ones((8, stats["norm_1"]["mean"].shape[0]))
    else:
        acts["conv_1"] = jnp.ones((8, 4, 4, stats["norm_1"]["mean"].shape[0]))
        acts["fc_0"] = jnp.ones((8, variables["params"]["fc_0"]["kernel"].shape[-1]))
    new_vars, _, _ = c.intervention.apply(variables, state["opt_state"], state["iv_state"], acts, 0,
                                          jax.random.PRNGKey(1))
    mean, var = np.asarray(new_vars["batch_stats"]["norm_0"]["mean"]), np.asarray(new_vars["batch_stats"]["norm_0"]["var"])
    assert mean[1] == 0.0 and var[1] == 1.0
    np.testing.assert_array_equal(np.delete(mean, 1), np.delete(np.asarray(stats["norm_0"]["mean"]), 1))
    np.testing.assert_array_equal(np.delete(var, 1), np.delete(np.asarray(stats["norm_0"]["var"]), 1))


@pytest.mark.parametrize("family", ["resnet18", "vit"])
def test_unit_surgery_on_families_without_replaceable_units_is_refused(family):
    with pytest.raises(InputError):
        c = _components(family, **{"intervention.name": "redo"})
        state = init_state(c, 0)
        c.intervention.apply(state["variables"], state["opt_state"], state["iv_state"], {}, 0, jax.random.PRNGKey(0))


def test_make_optimizer_refuses_momentum_with_adam():
    from plasticity_dynamics.optim import make_optimizer

    with pytest.raises(InputError, match="momentum=0.9"):
        make_optimizer("adam", 1e-3, momentum=0.9)
    assert isinstance(make_optimizer("sgd", 1e-3, momentum=0.9), optax.GradientTransformation)
