"""Device check for a GPU/TPU: the curvature and training kernels at paper scale, in < 5 minutes.

``make device-check`` or ``python -m benchmarks.device_check [--out PATH] [--cpu-full]`` writes
JSON with:

- ``devices``: what JAX sees (platform, kind, count);
- ``resnet``: the paper-preset ResNet-18 (11.2M parameters, batch 32, k = 3, 4 frozen units)
  normal spectrum by ``pdx.curvature.normal_spectrum_fn``: wall time with compile apart
  (jax.monitoring compile events), gradient and HVP times and their ratio;
- ``seeds``: one training chunk (``pdx.training.step.train_step`` in a ``lax.scan``) of the paper
  MLP and the paper CNN on random data, 16 vmapped seeds against 1 seed (time per chunk);
- ``cloning``: a 1-epoch (391 steps of 128) paper-CNN cloning smoke on random CIFAR-shaped
  data: train, expand x2 (``pdx.manifolds.expand``), train the clone with SGD, and measure its
  relative distance to the cloning manifold (must stay at float rounding);
- ``must_hold``: measured, not asserted by reading code: the spectrum function makes no
  device-to-host transfer (it runs under ``jax.transfer_guard_device_to_host("disallow")``)
  and a trajectory of frozen manifolds with different normal_dim compiles it once.

Without an accelerator it runs shrunk (tiny presets, a few steps) and says so in
``message``, so CI can run it (tests/curvature/test_device_check.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import default_out, environment, write_json
from benchmarks.curvature_fn import _resnet
from plasticity_dynamics.runtime import CompileLog
from plasticity_dynamics.losses import masked_loss


def _devices() -> dict:
    devs = jax.devices()
    return {"platform": jax.default_backend(), "count": len(devs),
            "kinds": sorted({getattr(d, "device_kind", str(d)) for d in devs})}


def _chunk_seeds(family: str, preset: str, steps: int, seeds: int, batch: int = 128) -> dict:
    import optax

    import plasticity_dynamics as pdx
    from plasticity_dynamics.loop import run_steps
    from plasticity_dynamics.training.step import make_step

    model = pdx.models.create(family, preset=preset, dropout=0.0)
    shape = (32, 32, 3) if family != "mlp" else (784,)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((steps, batch) + shape), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 10, (steps, batch)))
    mask = jnp.ones((model.options["num_outputs"],), bool)
    opt = optax.sgd(0.01)

    def chunk(seed):
        variables = model.init(jax.random.PRNGKey(seed), xs[0, :2])
        state = (variables, opt.init(variables["params"]))

        step = make_step(model, opt, "xent",
                         lambda i: (xs[i], ys[i], mask, jax.random.fold_in(jax.random.PRNGKey(seed), i)))
        return run_steps(step, state, steps)[1][0]

    out = {}
    for n in (1, seeds):
        f = jax.jit(jax.vmap(chunk))
        s = jnp.arange(n)
        t0 = time.perf_counter()
        jax.block_until_ready(f(s))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = jax.block_until_ready(f(s))
        out[f"seeds_{n}_s"] = time.perf_counter() - t0
        out[f"seeds_{n}_compile_s"] = max(first - out[f"seeds_{n}_s"], 0.0)
        out["finite"] = bool(np.all(np.isfinite(np.asarray(losses))))
    out.update({"family": family, "preset": preset, "steps": steps, "batch": batch,
                "time_ratio": out[f"seeds_{seeds}_s"] / out["seeds_1_s"], "seeds": seeds})
    return out


def _cloning(preset: str, steps: int, batch: int = 128) -> dict:
    import optax

    import plasticity_dynamics as pdx
    from plasticity_dynamics.loop import run_steps
    from plasticity_dynamics.training.step import make_step

    model = pdx.models.create("cnn", preset=preset, dropout=0.0)
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.standard_normal((steps * batch, 32, 32, 3)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 10, steps * batch))
    mask = jnp.ones((model.options["num_outputs"],), bool)
    opt = optax.sgd(0.01)

    def run(model_, variables):
        def batch_at(i):
            return (jax.lax.dynamic_slice_in_dim(xs, i * batch, batch),
                    jax.lax.dynamic_slice_in_dim(ys, i * batch, batch), mask, jax.random.PRNGKey(i))

        (v, _), (losses, _) = run_steps(make_step(model_, opt, "xent", batch_at),
                                        (variables, opt.init(variables["params"])), steps)
        return v, losses

    t0 = time.perf_counter()
    base, _ = jax.jit(lambda v: run(model, v))(model.init(jax.random.PRNGKey(0), xs[:2]))
    wide_model, wide, partition = pdx.manifolds.expand(model, base, 2)
    man = pdx.manifolds.cloned(partition, wide["params"])
    final, losses = jax.jit(lambda v: run(wide_model, v))(wide)
    dist = float(man.relative_distance(final["params"]))
    return {"preset": preset, "steps_per_phase": steps, "batch": batch,
            "wall_s": time.perf_counter() - t0, "relative_distance": dist,
            "stays_on_manifold": dist < 1e-5, "finite": bool(np.all(np.isfinite(np.asarray(losses))))}


def _must_hold() -> dict:
    """Measured properties of normal_spectrum_fn on a small MLP (any backend)."""
    import plasticity_dynamics as pdx

    model = pdx.models.create("mlp", preset="tiny", dropout=0.0, norm="none")
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((16, 6)), jnp.float32)
    y = jnp.asarray(rng.integers(0, model.options["num_outputs"], 16))
    params = model.init(jax.random.PRNGKey(0), x[:2])["params"]

    def loss(p, x, y):
        logits = model.apply({"params": p}, x).logits
        return masked_loss(logits, y)[0]

    fn = pdx.curvature.normal_spectrum_fn(loss, k=2, method="lanczos")
    key = jax.device_put(jax.random.PRNGKey(0))
    with CompileLog() as comp:
        dims = []
        for units in ([0], [1, 2], [3, 4, 5]):
            man = jax.device_put(pdx.manifolds.frozen({"hidden_0": units}, params))
            dims.append(man.normal_dim)
            with jax.transfer_guard_device_to_host("disallow"):
                data = fn(params, man, x, y, key=key)
            jax.block_until_ready(data)
    kernel = sum("normal_spectrum_kernel" in n for n in comp.names)
    return {"normal_dims": dims, "spectrum_compiles": kernel, "one_compile_per_trajectory": kernel == 1,
            "no_device_to_host_copy": True}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/device_check.json)")
    ap.add_argument("--cpu-full", action="store_true", help="paper sizes even without an accelerator (slow)")
    ap.add_argument("--resnet-iters", type=int, default=60, help="Lanczos depth of the ResNet-18 spectrum")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    accel = jax.default_backend() != "cpu"
    full = accel or args.cpu_full
    message = ("paper sizes on " + jax.default_backend()) if full else (
        "no accelerator: shrunk run (tiny presets, few steps, ResNet-18 tiny preset at 5 Lanczos "
        "steps); the numbers only show that the check runs")
    print(message, flush=True)
    payload = {"benchmark": "device_check", "full": full, "message": message,
               "environment": environment(), "devices": _devices()}
    payload["must_hold"] = _must_hold()
    payload["resnet"] = _resnet(quick=not full, iters=args.resnet_iters if full else 5,
                                batch=32 if full else 8, preset=None if full else "tiny")
    print(f"resnet: {payload['resnet']['spectrum_total_s']:.1f} s", flush=True)
    seeds, steps = (16, 50) if full else (2, 2)
    preset = "paper" if full else "tiny"
    payload["seeds"] = [_chunk_seeds(f, preset, steps, seeds) for f in ("mlp", "cnn")]
    payload["cloning"] = _cloning(preset, 391 if full else 2)
    payload["wall_s"] = time.perf_counter() - t0
    out = write_json(args.out or default_out("device_check", quick=not full), payload)
    print(f"device check: {payload['wall_s']:.1f} s, wrote {out}")
    return payload


if __name__ == "__main__":
    main()
