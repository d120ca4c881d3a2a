"""Analyse a run directory: LoP manifolds, their normal curvature and gradient leakage along
the recorded trajectory (``plasticity-dynamics analyze RUN_DIR``).

For every selected checkpoint and seed, on the fixed metric batch of the checkpoint's task:

1. ``pdx.manifolds.detect``: frozen units (|f'(z)| = 0 on every sample, Theorem 2.1) and clone
   clusters (activation cosine > 0.9999), with their evidence;
2. for each non-empty manifold (frozen M_F, cloned M_D): the extreme eigenvalues of the loss
   Hessian restricted to its normal space, and the stable / unstable / saddle / degenerate
   verdict (``pdx.curvature.normal_spectrum``; PAPER.md 1.6, Definition A.2);
3. the leakage ‖P_N g‖ / ‖g‖ of the loss gradient and the distance of the point from the
   manifold's reference leaf (0 at detection: the manifold is built at the point).

Optional, per checkpoint and seed (flags of ``analyze``; each adds keys to ``manifolds.json``):

- ``--ntk``: the eNTK ``J J^T`` of the logits on the metric batch (eval mode):
  ``seed["ntk"]`` with effective rank, condition number, lambda_max, trace; and for each
  manifold the normal eNTK ``J P_N J^T`` (``manifolds[name]["ntk"]``: how far the outputs can
  still move off the trap). ``pdx.curvature.ntk_spectrum`` (dense up to 512 outputs, else the
  32 largest by Lanczos: the rank is then that of the top 32).
- ``--layers``: the normal spectrum restricted to each layer's parameters
  (``manifolds[name]["layers"][layer]``, ``pdx.curvature.layer_spectra``).
- ``--track``: principal angles (radians, ascending) between the k lowest and the k highest
  normal eigenvectors and those of the previous selected checkpoint (``manifolds[name]
  ["angles_low"]`` / ``["angles_high"]``, ``pdx.curvature.principal_angles``).
- ``--lyapunov W``: the k leading finite-time Lyapunov exponents of the normal dynamics over
  the W run steps that follow the checkpoint (``pdx.curvature.normal_lyapunov`` of
  ``pdx.training.run_step_fn``: the run's own minibatches, dropout and intervention keys, lane
  optimiser and task-start actions, from the checkpoint's full state), ``manifolds[name]
  ["lyapunov"]`` with the window's global steps ``first_step .. last_step`` and its ``task``.
  The window is clipped to the end of the task it starts in (``steps`` says how many were
  taken); after the run's last step, or for an intervention that cannot be linearised (cbp,
  redo), the record has an ``error`` instead. When a checkpoint exists at the window's end,
  ``end_state_max_abs_diff`` is the largest |difference| between the window's unperturbed
  end params and that checkpoint's (the replay check: float32 rounding, ~1e-6).
- ``--churn``: churn (``pdx.metrics.churn``, C-CHAIN's definition: the mean over the examples
  and outputs of |f_after(x) - f_before(x)|, logits in eval mode, ``abs``; for classification
  also ``flip``, the fraction of changed argmax predictions) on a held-out batch, the test
  split's metric batch of the checkpoint's task (never trained on): ``seed["churn"]
  ["next_update"]``, the churn of the run's own next update (one replayed step, as C-CHAIN
  defines churn: per update, on data outside the update's batch), and ``["since_previous"]``,
  the change since the previous *selected* checkpoint (many updates; at task ends this is the
  churn across a whole task). Plotted against task beside the eNTK rank.

The loss is the masked training loss in train mode with dropout off (the gradient the optimiser
sees, without its noise). Writes ``RUN_DIR/manifolds.json`` and ``RUN_DIR/figures/manifolds_*``.

Steps 2-3 run for all seeds of a checkpoint at once: one ``jax.vmap`` over the seed axis of
``pdx.curvature.normal_spectrum_fn`` (Lanczos, normal_dim traced), the gradient, the leakage and
the distance. Detection (step 1) stays per seed on the host. The frozen manifolds have one
pytree structure whatever units are frozen, and the cloned manifolds are built with
``layout="dense"`` so their structure does not depend on the clusters either: the kernel
compiles once per manifold kind (frozen, cloned) for the whole run, however the frozen and
cloned sets change from checkpoint to checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError


def select_steps(available: list[int], spec: str) -> list[int]:
    """``all`` | ``last`` | comma-separated steps (each must be a checkpoint)."""
    if not available:
        raise InputError("the run directory has no checkpoints to analyse")
    if spec == "all":
        return list(available)
    if spec == "last":
        return [available[-1]]
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--steps {spec!r} must be all, last or comma-separated integers") from None
    missing = [s for s in wanted if s not in available]
    if missing or not wanted:
        raise InputError(f"--steps {spec!r}: no checkpoint at {missing or spec}; checkpoints: "
                         f"{', '.join(map(str, available))}")
    return wanted


def _stack(trees):
    """Stack pytrees of one structure along a new leading (seed) axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *trees)


def spectra_kernel(loss_fn, *, k: int = 3, num_iters: int | None = None):
    """``jit(vmap(f))`` over seeds: ``f(params, manifold, rest, x, y, mask)`` -> (SpectrumData,
    leakage ||P_N g|| / ||g||, distance to the manifold's reference leaf) for the loss
    ``loss_fn(params, rest, x, y, mask)``; params, rest and manifold carry the seed axis, the
    batch is shared. One compile per manifold pytree structure (the kernel's name,
    ``analyze_normal_spectra``, identifies it in jax.monitoring compile events)."""
    from ..curvature import normal_spectrum_fn

    spec = normal_spectrum_fn(loss_fn, k=k, method="lanczos", num_iters=num_iters)

    def analyze_normal_spectra(params, manifold, rest, x, y, mask):
        data = spec(params, manifold, rest, x, y, mask)
        g = jax.grad(loss_fn)(params, rest, x, y, mask)
        return data, manifold.leakage(g), manifold.distance(params)

    return jax.jit(jax.vmap(analyze_normal_spectra, in_axes=(0, 0, 0, None, None, None)))


def _manifold_record(out, i: int, dim: int) -> dict:
    """The manifolds.json entry of seed ``i`` from the host copy of the batched kernel output."""
    from ..curvature import classify

    data, leak, dist = out
    valid = np.asarray(data.valid[i])
    ev = np.asarray(data.eigenvalues[i], np.float64)[valid]
    res = np.asarray(data.residuals[i], np.float64)[valid]
    tol = float(data.tolerance[i])
    return {"normal_dim": int(dim), "verdict": classify(ev, tol), "method": "lanczos",
            "eigenvalues": [float(v) for v in ev], "lambda_min": float(ev.min()),
            "lambda_max": float(ev.max()), "residuals": [float(r) for r in res],
            "converged": bool(data.converged[i]), "tolerance": tol,
            "num_hvps": int(data.num_hvps[i]), "leakage": float(leak[i]), "distance": float(dist[i])}


def analyze(run_dir: str | Path, steps: str = "all", *, k: int = 3, progress: bool = True,
            num_iters: int | None = None, ntk: bool = False, layers: bool = False,
            track: bool = False, lyapunov: int = 0, churn: bool = False) -> dict:
    """Detect manifolds and their normal spectra at the checkpoints of ``run_dir``; returns the
    ``manifolds.json`` payload (also written to disk, atomically).

    k: extreme eigenpairs per end; num_iters: Lanczos depth (default ``max(60, 6k)``, stopped
    at each manifold's normal_dim). All seeds of a checkpoint go through one vmapped kernel
    (see the module docstring); the per-pair wall time is not recorded (the seeds share a
    call), the payload's ``wall_time_s`` is the total."""
    from ..manifolds import cloned, detect
    from ..models import create
    from ..training import Config, build, list_checkpoints, load_checkpoint
    from ..training.engine import init_state, progress_bar
    from ..training.rundir import atomic_write_json
    from ..training.step import masked_loss

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise InputError(f"RUN_DIR {str(run_dir)!r} is not a run directory (no config.toml)")
    chosen = select_steps(list_checkpoints(run_dir), steps)
    config = Config.from_toml(run_dir / "config.toml")
    c = build(config)
    model = c.model
    no_drop = {k_: 0.0 for k_ in ("dropout", "attention_dropout") if model.options.get(k_)}
    plain = create(model.name, **{**model.options, **no_drop}) if no_drop else model
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray(config.seeds))
    kind = c.stream.loss

    def loss_fn(params, rest, x, y, mask):
        out = plain.apply({**rest, "params": params}, x, train=True)
        return masked_loss(out.logits, y, mask, kind)[0]

    if isinstance(lyapunov, bool) or not isinstance(lyapunov, int) or lyapunov < 0:
        raise InputError(f"--lyapunov {lyapunov!r} must be a window length >= 0 (0: off)")
    kernel = spectra_kernel(loss_fn, k=k, num_iters=num_iters)
    extras = _Extras(plain, c, kind, loss_fn, k, ntk, layers, track, lyapunov, churn,
                     lambda s: load_checkpoint(run_dir, s, template)[0], list_checkpoints(run_dir))
    records = []
    bar = progress_bar(len(chosen) * len(config.seeds), progress, desc="analyze", unit="ckpt·seed")
    t0 = time.perf_counter()
    for step in chosen:
        state, meta = load_checkpoint(run_dir, step, template)
        task = int(meta.get("task", 0))
        x, y, mask = (jnp.asarray(a) for a in c.stream.metric_batch(task))
        variables = state["variables"]
        params = variables["params"]
        rest = {k_: v for k_, v in variables.items() if k_ != "params"}
        dets = []
        for i, _seed in enumerate(config.seeds):
            one = jax.tree_util.tree_map(lambda a: a[i], variables)
            dets.append(detect(model, one, (x, y)))
            bar.update(1)
        entry = {"step": step, "task": task,
                 "seeds": [{"seed": seed, "detection": det.summary(), "manifolds": {}}
                           for seed, det in zip(config.seeds, dets)]}
        for name in ("frozen", "cloned"):
            mans = [det.frozen if name == "frozen" else
                    cloned(det.partition, det.cloned.reference, layout="dense") for det in dets]
            dims = [man.normal_dim for man in mans]
            if not any(dims):
                continue
            out = jax.device_get(kernel(params, _stack(mans), rest, x, y, mask))
            for i, seed_entry in enumerate(entry["seeds"]):
                if dims[i] == 0:
                    continue
                seed_entry["manifolds"][name] = _manifold_record(out, i, dims[i])
                if extras.any:
                    seed_entry["manifolds"][name].update(extras.manifold(
                        name, i, config.seeds[i], step, jax.tree_util.tree_map(lambda a: a[i], state), mans[i],
                        jax.tree_util.tree_map(lambda a: a[i], out[0].eigenvectors), (x, y, mask)))
        if ntk:
            for i, seed_entry in enumerate(entry["seeds"]):
                seed_entry["ntk"] = extras.ntk(jax.tree_util.tree_map(lambda a: a[i], variables), x)
        if churn:
            held_out = jnp.asarray(c.stream.metric_batch(task, split="test")[0])
            for i, seed_entry in enumerate(entry["seeds"]):
                seed_entry["churn"] = extras.churn(i, config.seeds[i], step,
                                                   jax.tree_util.tree_map(lambda a: a[i], state), held_out)
        records.append(entry)
    bar.close()
    payload = {"run_dir": str(run_dir), "k": k, "wall_time_s": round(time.perf_counter() - t0, 2),
               "options": {"ntk": ntk, "layers": layers, "track": track, "lyapunov": lyapunov, "churn": churn},
               "loss": "masked training loss, train mode, dropout off", "checkpoints": records}
    atomic_write_json(run_dir / "manifolds.json", payload)
    plot_analysis(payload, run_dir / "figures")
    if ntk or track or lyapunov or churn:
        plot_dynamics(payload, run_dir / "figures")
    return payload


def _ntk_record(s) -> dict:
    return {"effective_rank": s.effective_rank, "condition_number": s.condition_number,
            "lambda_max": float(s.eigenvalues[0]) if s.eigenvalues.size else 0.0,
            "trace": s.trace, "method": s.method, "size": s.size,
            "num_eigenvalues": int(s.eigenvalues.size)}


class _Extras:
    """The optional per-seed analyses (--ntk, --layers, --track, --lyapunov) on the host."""

    def __init__(self, model, components, kind, loss_fn, k, ntk, layers, track, lyapunov, churn, load, checkpoints):
        from ..training.replay import replay_step

        self.k, self.do_ntk, self.do_layers, self.do_track, self.window = k, ntk, layers, track, lyapunov
        self.kind = kind
        self.any = ntk or layers or track or bool(lyapunov)
        self.loss_fn = loss_fn
        self.prev = {}
        self.c = components
        self.load, self.checkpoints, self.loaded = load, set(checkpoints), {}
        self.contexts = {}

        def ntk_logits(params, batch):
            """eNTK function: eval mode; ``batch = (rest, x)`` so that the batch statistics are
            traced arguments (not differentiated: J is taken with respect to params only)."""
            rest, x = batch
            return model.apply({**rest, "params": params}, x, train=False).logits

        self.ntk_fn = ntk_logits
        # the run's own step; its context (seed, task data, schedule) is a traced argument, so
        # one compile serves every checkpoint and seed (per manifold structure and window length)
        self.step = replay_step(components) if (lyapunov or churn) else None
        self.one_step = jax.jit(self.step) if churn else None
        self.prev_vars = {}

        def outputs(variables, x):
            """Churn function: the logits in eval mode (no dropout, running statistics)."""
            return model.apply(variables, x, train=False).logits

        self.outputs = outputs

    def ntk(self, variables, x) -> dict:
        from ..curvature import ntk_spectrum

        rest = {k_: v for k_, v in variables.items() if k_ != "params"}
        return _ntk_record(ntk_spectrum(self.ntk_fn, variables["params"], (rest, x)))

    def manifold(self, name, i, seed, step, state, manifold, vectors, batch) -> dict:
        from ..curvature import layer_spectra, ntk_spectrum, principal_angles

        out = {}
        variables = state["variables"]
        params = variables["params"]
        rest = {k_: v for k_, v in variables.items() if k_ != "params"}
        x, y, mask = batch
        if self.do_ntk:
            out["ntk"] = _ntk_record(ntk_spectrum(self.ntk_fn, params, (rest, x), manifold=manifold))
        if self.do_layers:
            spectra = layer_spectra(self.loss_fn, params, manifold, k=self.k, args=(rest, x, y, mask))
            out["layers"] = {layer: {"normal_dim": sp.normal_dim, "verdict": sp.verdict,
                                     "lambda_min": float(sp.eigenvalues.min()),
                                     "lambda_max": float(sp.eigenvalues.max())} for layer, sp in spectra.items()}
        if self.do_track:
            k = self.k
            low = jax.tree_util.tree_map(lambda a: np.asarray(a)[:k], vectors)
            high = jax.tree_util.tree_map(lambda a: np.asarray(a)[k:], vectors)
            prev = self.prev.get((name, i))
            if prev is not None:
                out["angles_low"] = [float(a) for a in principal_angles(prev[0], low)]
                out["angles_high"] = [float(a) for a in principal_angles(prev[1], high)]
            self.prev[(name, i)] = (low, high)
        if self.window:
            out["lyapunov"] = self.lyapunov(i, seed, step, state, manifold)
        return out

    def context(self, seed, task):
        from ..training.replay import replay_context

        if task not in self.contexts:  # one task's data kept at a time, shared by the seeds
            self.contexts = {task: replay_context(self.c, 0, task)}
        return {**self.contexts[task], "seed": jnp.int32(seed)}

    def churn(self, i, seed, step, state, held_out) -> dict:
        """Churn on the held-out batch (see the module docstring): of the run's next update
        (replayed) and since the previous selected checkpoint."""
        from ..metrics import churn
        from ..training.replay import engine_state, step_state, task_window

        kinds = ("abs", "flip") if self.kind == "xent" else ("abs",)

        def measure(before, after):
            return {kd: float(churn(self.outputs, before, after, held_out, kind=kd)) for kd in kinds}

        variables = state["variables"]
        rec = {"held_out": f"test split, {int(held_out.shape[0])} examples of the checkpoint's task"}
        try:
            win = task_window(self.c, step, 1)
        except InputError as err:  # the run's last checkpoint: no update follows
            rec["next_update_error"] = str(err)
        else:
            after = engine_state(self.one_step(step_state(state), jnp.int32(step), self.context(seed, win.task)))
            rec["next_update"] = {"step": step, **measure(variables, after["variables"])}
        prev = self.prev_vars.get(i)
        if prev is not None:
            rec["since_previous"] = {"from_step": prev[0], **measure(prev[1], variables)}
        self.prev_vars[i] = (step, variables)
        return rec

    def lyapunov(self, i, seed, step, state, manifold) -> dict:
        """Exponents over the run steps after checkpoint ``step`` (see the module docstring)."""
        from ..curvature import normal_lyapunov
        from ..training.replay import check_linearisable, step_state, task_window

        rec = {"window": self.window}
        try:
            win = task_window(self.c, step, self.window, clip=True)
            rec.update(first_step=win.start, last_step=win.start + win.steps - 1, steps=win.steps, task=win.task)
            check_linearisable(self.c, win)
            ly = normal_lyapunov(self.step, step_state(state), manifold, k=self.k, steps=win.steps, t0=win.start,
                                 args=(self.context(seed, win.task),))
        except InputError as err:  # no run step follows; cbp/redo; Adam at zero second moment (dead units)
            return {**rec, "exponents": [], "growth": [], "error": str(err)}
        rec.update(exponents=[float(e) for e in ly.exponents], growth=[float(g) for g in ly.growth])
        end = win.start + win.steps
        if end in self.checkpoints:
            if end not in self.loaded:
                self.loaded = {end: self.load(end)}  # one checkpoint kept: the next window starts there
            want = jax.tree_util.tree_leaves(self.loaded[end]["variables"]["params"])
            got = jax.tree_util.tree_leaves(ly.final_state["params"])
            rec["end_state_max_abs_diff"] = max(float(np.max(np.abs(np.asarray(g) - np.asarray(w)[i])))
                                                for g, w in zip(got, want))
        return rec


def plot_dynamics(payload: dict, out_dir: Path) -> list:
    """eNTK effective rank and churn against task; normal eNTK lambda_max against the normal
    Hessian extremes; principal angles and Lyapunov exponents against step (what was recorded)."""
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    fig, axes = plt.subplots(1, 5, figsize=(21, 3.5))
    ax_rank, ax_churn, axes = axes[0], axes[1], axes[1:]
    for entry in payload["checkpoints"]:
        for s in entry["seeds"]:
            if "ntk" in s:
                ax_rank.scatter(entry["task"], s["ntk"]["effective_rank"], color="C0", s=20)
            ch = s.get("churn", {})
            if "next_update" in ch:
                ax_churn.scatter(entry["task"], max(ch["next_update"]["abs"], 1e-12), color="C0", marker="o", s=20)
            if "since_previous" in ch:
                ax_churn.scatter(entry["task"], max(ch["since_previous"]["abs"], 1e-12), color="C3", marker="s", s=20)
            for j, (name, m) in enumerate(sorted(s["manifolds"].items())):
                col = f"C{j + 1}"
                if "ntk" in m:
                    axes[1].scatter(m["ntk"]["lambda_max"], m["lambda_min"], color=col, marker="v", s=20)
                    axes[1].scatter(m["ntk"]["lambda_max"], m["lambda_max"], color=col, marker="^", s=20)
                for key, mk in (("angles_low", "v"), ("angles_high", "^")):
                    if key in m and m[key]:
                        axes[2].scatter(entry["step"], max(m[key]), color=col, marker=mk, s=20)
                if m.get("lyapunov", {}).get("exponents"):
                    axes[3].scatter(entry["step"], m["lyapunov"]["exponents"][0], color=col, s=20)
    ax_rank.set_title("eNTK effective rank (metric batch) against task", fontsize=9)
    ax_rank.set_xlabel("task")
    ax_churn.set_title("churn mean|Δf| on the held-out batch (o next update,\n■ since the previous checkpoint)",
                       fontsize=8)
    ax_churn.set_xlabel("task")
    ax_churn.set_yscale("log")
    axes[1].set_title("normal Hessian extremes (v min, ^ max) against\nnormal eNTK λ_max (C1 cloned, C2 frozen)",
                      fontsize=8)
    axes[1].set_xlabel("normal eNTK λ_max")
    axes[1].set_xscale("symlog", linthresh=1e-6)
    axes[1].set_yscale("symlog", linthresh=1e-6)
    axes[2].set_title("largest principal angle to the previous checkpoint\n(v k lowest, ^ k highest normal eigvecs)",
                      fontsize=8)
    axes[2].set_ylabel("radians")
    axes[3].set_title("top normal Lyapunov exponent (per step)", fontsize=9)
    axes[3].axhline(0, color="grey", linewidth=0.6)
    for ax in axes[2:]:
        ax.set_xlabel("step")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "manifolds_dynamics")


def plot_analysis(payload: dict, out_dir: Path) -> list:
    """Extreme normal eigenvalues (markers: verdict) and leakage against step, per manifold."""
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    marker = {"stable": "o", "unstable": "v", "saddle": "X", "degenerate": "s"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for j, name in enumerate(("frozen", "cloned")):
        ax = axes[j]
        for entry in payload["checkpoints"]:
            for s in entry["seeds"]:
                m = s["manifolds"].get(name)
                if m is None:
                    continue
                for val, col in ((m["lambda_min"], "C0"), (m["lambda_max"], "C3")):
                    ax.scatter(entry["step"], val, marker=marker[m["verdict"]], color=col, s=25)
                axes[2].scatter(entry["step"], max(m["leakage"], 1e-12), color=f"C{j}", marker=marker[m["verdict"]],
                                s=20, label=name if entry is payload["checkpoints"][0] and s is entry["seeds"][0] else None)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(f"{name} manifold: λ_min (blue), λ_max (red)\nmarker: o stable, v unstable, X saddle, s degenerate",
                     fontsize=8)
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1e-6)
    axes[2].set_yscale("log")
    axes[2].set_title("gradient leakage ‖P_N g‖/‖g‖", fontsize=9)
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "manifolds_curvature")
