"""analyze RUN_DIR: planted dead units are found, their normal block is zero (degenerate)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity_dynamics.cli import main
from plasticity_dynamics.experiments.analyze import select_steps
from plasticity_dynamics.manifolds import detect
from plasticity_dynamics.training import Config, list_checkpoints, load_checkpoint, save_checkpoint, train
from plasticity_dynamics.training.engine import init_state


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "run"
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.0, "tasks.num_tasks": 1,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 50, "train.steps_per_task": 10,
        "train.batch_size": 16, "record.every": 5, "record.checkpoint_every": 5, "seeds": 2,
        "record.metrics": False})
    run = train(cfg, out=out, progress=False)
    # Plant two dead units in hidden_1 (the last hidden layer: no cascade) of each checkpoint (other units each time): a bias far
    # below any input's drive.
    template = jax.vmap(lambda s: init_state(run.components, s))(jnp.asarray([0, 1]))
    first = list_checkpoints(out)[0]
    base, _ = load_checkpoint(out, first, template)  # read before any checkpoint is rewritten
    x, y, _m = run.components.stream.metric_batch(0)
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), base["variables"])
    dead = set(detect(run.components.model, one, (x, y)).frozen_units.get("hidden_1", []))
    live = [u for u in range(16) if u not in dead]
    # other units, and another number of them, at each checkpoint: the frozen sets and their
    # normal dimensions differ
    for step, units in zip(list_checkpoints(out), (live[:1], live[1:4])):
        state = jax.tree_util.tree_map(np.array, base)  # same network (a copy), other planted units
        meta = {"task": 0, "seeds": [0, 1]}
        bias = np.array(state["variables"]["params"]["dense_1"]["bias"])
        bias[:, units] = -1e4
        state["variables"]["params"]["dense_1"]["bias"] = bias
        save_checkpoint(out, step, state, meta)
    return out


def test_analyze_finds_planted_dead_units_with_zero_normal_block(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--steps", "last", "--ntk", "--quiet"]) == 0
    payload = json.loads((run_dir / "manifolds.json").read_text())
    seed = payload["checkpoints"][-1]["seeds"][0]
    frozen = seed["manifolds"]["frozen"]
    # --ntk: the eNTK's rank lies in [1, B C]; the planted dead units move no output (normal eNTK 0)
    assert 1.0 <= seed["ntk"]["effective_rank"] <= seed["ntk"]["size"]
    assert frozen["ntk"]["lambda_max"] <= 1e-6 * max(seed["ntk"]["lambda_max"], 1.0)
    assert frozen["verdict"] == "degenerate"
    assert max(abs(frozen["lambda_min"]), abs(frozen["lambda_max"])) <= frozen["tolerance"]
    assert frozen["leakage"] < 1e-6
    units = seed["detection"]
    assert "hidden_1" in json.dumps(units)
    assert (run_dir / "figures" / "manifolds_curvature.png").stat().st_size > 1000
    assert "degenerate" in capsys.readouterr().out


def test_one_compiled_kernel_for_every_checkpoint(run_dir):
    """Other frozen units, and another number of them, at each checkpoint, two seeds vmapped:
    the curvature kernel compiles once per manifold kind for the whole trajectory (counted with
    jax.monitoring backend-compile events), and its values match the one-shot convenience."""
    from plasticity_dynamics.curvature import normal_spectrum
    from plasticity_dynamics.experiments.analyze import analyze

    from plasticity_dynamics.runtime import CompileLog

    with CompileLog() as log:
        payload = analyze(run_dir, "all", progress=False)
    compiles = [n for n in log.names if "analyze_normal_spectra" in n]
    frozen = [s["manifolds"]["frozen"] for c in payload["checkpoints"] for s in c["seeds"][:1]]
    assert len(frozen) == 2
    assert payload["checkpoints"][0]["seeds"][0]["detection"] != payload["checkpoints"][1]["seeds"][0]["detection"]
    dims = {f["normal_dim"] for f in frozen}
    assert len(dims) == 2, dims
    kinds = {name for c in payload["checkpoints"] for s in c["seeds"] for name in s["manifolds"]}
    assert 1 <= len(compiles) <= len(kinds), compiles
    # the batched kernel's values equal a separate one-shot call for one (checkpoint, seed)
    cfg_run = run_dir
    from plasticity_dynamics.training import Config, build
    from plasticity_dynamics.training.step import masked_loss

    c = build(Config.from_toml(cfg_run / "config.toml"))
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray([0, 1]))
    step = list_checkpoints(run_dir)[-1]
    state, _ = load_checkpoint(run_dir, step, template)
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[1]), state["variables"])
    x, y, mask = (jnp.asarray(a) for a in c.stream.metric_batch(0))
    det = detect(c.model, one, (x, y))

    def loss(p, x, y, mask):
        return masked_loss(c.model.apply({**one, "params": p}, x, train=True).logits, y, mask, c.stream.loss)[0]

    spec = normal_spectrum(loss, one["params"], det.frozen, k=3, method="lanczos", args=(x, y, mask))
    got = payload["checkpoints"][-1]["seeds"][1]["manifolds"]["frozen"]
    scale = max(np.abs(spec.eigenvalues).max(), 1e-30)
    assert np.allclose(got["eigenvalues"], spec.eigenvalues, atol=1e-5 * scale + 1e-7)


def test_select_steps():
    assert select_steps([5, 10], "all") == [5, 10]
    assert select_steps([5, 10], "last") == [10]
    assert select_steps([5, 10], "5") == [5]
    from plasticity_dynamics.errors import InputError

    for bad in ("7", "x", ""):
        with pytest.raises(InputError):
            select_steps([5, 10], bad)


def test_analyze_bad_input(run_dir, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--quiet"]) == 2
    assert main(["analyze", str(run_dir), "--steps", "99", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "99" in err[1]


@pytest.mark.slow
def test_analyze_ntk_layers_track_lyapunov(run_dir, capsys):
    """The optional records land in manifolds.json with their figure: eNTK rank within the batch
    size x outputs, the normal eNTK of the planted frozen units (whose outputs cannot move:
    they only feed a layer through exactly dead activations, so its lambda_max is ~0), per-layer
    normal spectra, angles from the second checkpoint on, and Lyapunov exponents."""
    assert main(["analyze", str(run_dir), "--ntk", "--layers", "--track", "--lyapunov", "3", "--quiet"]) == 0
    payload = json.loads((run_dir / "manifolds.json").read_text())
    assert payload["options"] == {"ntk": True, "layers": True, "track": True, "lyapunov": 3, "churn": False}
    first, last = payload["checkpoints"][0]["seeds"][0], payload["checkpoints"][-1]["seeds"][0]
    assert 1.0 <= first["ntk"]["effective_rank"] <= first["ntk"]["size"]
    frozen = last["manifolds"]["frozen"]
    assert frozen["ntk"]["lambda_max"] <= 1e-6 * max(last["ntk"]["lambda_max"], 1.0)
    # the planted units of dense_1 own their incoming weights (dense_1) and outgoing rows (out)
    assert frozen["layers"] and "dense_1" in frozen["layers"]
    assert sum(v["normal_dim"] for v in frozen["layers"].values()) == frozen["normal_dim"]
    assert "angles_low" not in payload["checkpoints"][0]["seeds"][0]["manifolds"]["frozen"]
    ang = frozen["angles_low"]
    assert len(ang) >= 1 and all(0 <= a <= np.pi / 2 + 1e-9 for a in ang) and ang == sorted(ang)
    ly = first["manifolds"]["frozen"]["lyapunov"]  # Adam (the default optimiser) on exactly dead units: no derivative
    assert ly["window"] == 3 and (len(ly["exponents"]) == payload["k"] or "eps_root" in ly["error"])
    assert (ly["first_step"], ly["last_step"]) == (payload["checkpoints"][0]["step"], payload["checkpoints"][0]["step"] + 2)
    ly = frozen["lyapunov"]  # the run's last checkpoint: no run step follows it
    assert ly["window"] == 3 and ly["exponents"] == [] and "no run step follows" in ly["error"]
    assert (run_dir / "figures" / "manifolds_dynamics.png").stat().st_size > 1000
    assert "manifolds_dynamics" in capsys.readouterr().out
    assert main(["analyze", str(run_dir), "--lyapunov", "-2", "--quiet"]) == 2


@pytest.fixture(scope="module")
def replayed_run(tmp_path_factory):
    """SGD + momentum, two tasks; dead units planted at checkpoint 3 and the run resumed from
    there, so every later checkpoint is the engine's own trajectory from the planted state."""
    out = tmp_path_factory.mktemp("an_replay") / "run"
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.0, "tasks.num_tasks": 2,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 50, "train.steps_per_task": 6,
        "train.batch_size": 16, "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
        "record.every": 3, "record.checkpoint_every": 3, "seeds": 2, "record.metrics": False})
    run = train(cfg, out=out, progress=False)
    assert list_checkpoints(out) == [3, 6, 9, 12]
    template = jax.vmap(lambda s: init_state(run.components, s))(jnp.asarray([0, 1]))
    state, meta = load_checkpoint(out, 3, template)
    state = jax.tree_util.tree_map(np.array, state)
    p = state["variables"]["params"]
    p["dense_1"]["bias"][:, 2:4] = -1e4  # two dead units in the last hidden layer
    # and a clone pair (units 0, 1: same incoming and outgoing weights, an invariant manifold)
    p["dense_1"]["kernel"][:, :, 1] = p["dense_1"]["kernel"][:, :, 0]
    p["dense_1"]["bias"][:, 1] = p["dense_1"]["bias"][:, 0]
    p["out"]["kernel"][:, 1, :] = p["out"]["kernel"][:, 0, :]
    state["opt_state"] = jax.tree_util.tree_map(np.array, template["opt_state"])  # momentum 0: the clones stay clones
    for step in (3, 6, 9, 12):
        for f in (out / "checkpoints").glob(f"step_{step:08d}.*"):
            f.unlink()
    save_checkpoint(out, 3, state, meta)
    train(cfg, out=out, resume=True, progress=False)
    assert list_checkpoints(out) == [3, 6, 9, 12]
    return out


@pytest.mark.slow
def test_lyapunov_replays_the_runs_own_steps(replayed_run):
    """--lyapunov W replays the run's minibatches and keys from each checkpoint: a window that
    ends on a checkpoint lands on it (the engine's own recorded params, float32 rounding), the
    exponents are finite and recorded with the window's step range; the window after a task end
    starts the next task; after the run's last step there is none."""
    from plasticity_dynamics.experiments.analyze import analyze

    payload = analyze(replayed_run, "3,6,12", lyapunov=3, progress=False)
    by_step = {c["step"]: c for c in payload["checkpoints"]}
    for step, task in ((3, 0), (6, 1)):
        for s in by_step[step]["seeds"]:
            ly = s["manifolds"]["cloned"]["lyapunov"]
            assert (ly["first_step"], ly["last_step"], ly["steps"], ly["task"]) == (step, step + 2, 3, task)
            assert len(ly["exponents"]) == payload["k"] and np.all(np.isfinite(ly["exponents"]))
            assert ly["exponents"] == sorted(ly["exponents"], reverse=True)
            assert ly["end_state_max_abs_diff"] < 1e-5, ly
            # exactly dead units: their weights get no gradient, the normal propagator is the
            # identity, every exponent is 0 (Lanczos resolves the one distinct value: NaN past it)
            fz = s["manifolds"]["frozen"]["lyapunov"]
            assert abs(fz["exponents"][0]) < 1e-6 and fz["end_state_max_abs_diff"] < 1e-5, fz
    for s in by_step[12]["seeds"]:
        for m in s["manifolds"].values():
            ly = m["lyapunov"]
            assert ly["exponents"] == [] and "no run step follows step 12" in ly["error"]


@pytest.mark.slow
def test_churn_of_the_next_update_and_since_the_previous_checkpoint(tmp_path):
    """--churn: with a checkpoint after every step, the churn of the replayed next update at
    checkpoint s equals the churn since the previous checkpoint recorded at s + 1 (the engine's own
    update), and both equal mean |logits_after - logits_before| on the held-out test batch,
    computed here from the checkpoints; the last checkpoint has no next update."""
    from plasticity_dynamics.experiments.analyze import analyze

    out = tmp_path / "run"
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.2, "tasks.num_tasks": 2,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 40, "train.steps_per_task": 2,
        "train.batch_size": 16, "optim.name": "sgd", "optim.lr": 0.1, "record.every": 1,
        "record.checkpoint_every": 1, "seeds": 1, "record.metrics": False})
    run = train(cfg, out=out, progress=False)
    steps = list_checkpoints(out)
    assert steps == [1, 2, 3, 4]
    payload = analyze(out, "all", churn=True, progress=False)
    ch = {c["step"]: c["seeds"][0]["churn"] for c in payload["checkpoints"]}
    c = run.components
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray([0]))

    def logits(step, x):
        v = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), load_checkpoint(out, step, template)[0]["variables"])
        return np.asarray(c.model.apply(v, x, train=False).logits, np.float64)

    for a, b in zip(steps, steps[1:]):
        task = payload["checkpoints"][steps.index(b)]["task"]
        x = jnp.asarray(c.stream.metric_batch(task, split="test")[0])
        want = np.mean(np.abs(logits(b, x) - logits(a, x)))
        flips = np.mean(logits(b, x).argmax(1) != logits(a, x).argmax(1))
        assert want > 0
        assert ch[b]["since_previous"]["from_step"] == a
        assert np.isclose(ch[b]["since_previous"]["abs"], want, rtol=1e-5)
        assert np.isclose(ch[b]["since_previous"]["flip"], flips)
    for a, b in zip(steps, steps[1:]):
        if payload["checkpoints"][steps.index(a)]["task"] == payload["checkpoints"][steps.index(b)]["task"]:
            # same held-out batch: the replayed next update is the engine's update a -> b
            assert np.isclose(ch[a]["next_update"]["abs"], ch[b]["since_previous"]["abs"], rtol=1e-4), (a, ch)
    assert "since_previous" not in ch[1]
    assert "no run step follows step 4" in ch[4]["next_update_error"]
    assert payload["options"]["churn"] is True
    assert (out / "figures" / "manifolds_dynamics.png").stat().st_size > 1000
