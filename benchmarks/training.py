"""Training throughput: steps per second for 1, 4 and 16 vmapped seeds, and seed sharding.

Baseline in the same run: one seed. With perfect vmap efficiency on a small model, 16 seeds
cost far less than 16x one seed (the seed axis fills idle vector lanes); the ratio
``seed-steps/s (N) / seed-steps/s (1)`` is printed. The device part runs the same program
with the seed axis sharded over 1, 2 and 4 fake CPU devices (a subprocess sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4``), or over the real devices of a GPU
host. Compile time (first call) is reported apart from the median run time.

    python -m benchmarks.training [--quick] [--out PATH]

Writes benchmarks/results/training.json (quick: benchmarks/results/quick/training.json);
``render(payload)`` gives the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .common import default_out, environment, environment_line, table, timed, write_json

ROOT = Path(__file__).resolve().parent.parent


def _setup(seeds: int, preset: str, devices: int | None):
    import jax
    import jax.numpy as jnp
    from functools import partial

    from plasticity_dynamics.training import Config
    from plasticity_dynamics.training.engine import seed_sharding, build, init_state, make_chunk_fn

    cfg = Config().with_overrides({"model.preset": preset, "seeds": seeds, "record.metrics": False,
                                   "train.batch_size": 128})
    c = build(cfg)
    sharding, n = seed_sharding(seeds, devices or jax.device_count())
    state = jax.device_put(jax.vmap(partial(init_state, c))(jnp.arange(seeds)), sharding)
    seed_arr = jax.device_put(jnp.arange(seeds, dtype=jnp.int32), sharding)
    data = jax.tree_util.tree_map(jnp.asarray, c.stream.task_data(0))
    return c, state, seed_arr, data, n


def measure(seeds: int, length: int, preset: str, repeats: int, devices: int | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    from plasticity_dynamics.training.engine import make_chunk_fn

    c, state, seed_arr, data, n = _setup(seeds, preset, devices)
    fn = jax.jit(jax.vmap(make_chunk_fn(c, length), in_axes=(0, 0, None, None, None, None, None)))
    t = timed(lambda: fn(state, seed_arr, data, jnp.int32(0), jnp.int32(0), jnp.int32(0), jnp.int32(length)),
              repeats=repeats)
    return {"seeds": seeds, "devices": n, "steps": length, "compile_s": t["first_call_s"] - t["median_s"],
            "run_s": t["median_s"], "steps_per_s": length / t["median_s"], "seed_steps_per_s": seeds * length / t["median_s"]}


def _device_child(args) -> None:
    rows = [measure(args.seeds, args.length, args.preset, args.repeats, devices=d) for d in (1, 2, 4)]
    print(json.dumps(rows))


def render(payload: dict) -> str:
    """Markdown tables of a training payload."""
    env = payload["environment"]
    where = "fake CPU devices" if env.get("backend") == "cpu" else f"{env.get('device_kind')} devices"
    return "\n".join([
        "Vmapped seeds (MLP 'small' on mnist1d, batch 128, one seed per vmapped lane, one device); "
        "time_ratio = run time of N seeds / run time of 1 seed (N would be linear), "
        "vmap_gain = N / time_ratio:", "",
        table(payload["vmap"], ["seeds", "steps", "compile_s", "run_s", "steps_per_s", "seed_steps_per_s",
                                "time_ratio", "vmap_gain"]), "",
        f"Seed axis (16 seeds) sharded over {where}:", "",
        table(payload["devices"], ["devices", "steps", "compile_s", "run_s", "seed_steps_per_s"])])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short chunks, few repeats (< 1 minute)")
    p.add_argument("--device-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/results[/quick]/training.json)")
    args = p.parse_args(argv)
    if args.device_child:
        _device_child(args)
        return {}
    length, repeats = (20, 2) if args.quick else (200, 5)
    rows = [measure(s, length, "small", repeats, devices=1) for s in (1, 4, 16)]
    base = rows[0]["seed_steps_per_s"]
    for r in rows:
        r["vmap_gain"] = r["seed_steps_per_s"] / base
        r["time_ratio"] = r["run_s"] / rows[0]["run_s"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    import jax

    dev_rows = []
    if jax.default_backend() == "cpu":
        proc = subprocess.run([sys.executable, "-m", "benchmarks.training", "--device-child", "--seeds", "16",
                               "--length", str(length), "--repeats", str(repeats)], env=env, capture_output=True,
                              text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"device child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        dev_rows = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        dev_rows = [measure(16, length, "small", repeats, devices=d) for d in sorted({1, jax.device_count()})]
    payload = {"benchmark": "training", "environment": environment(), "quick": args.quick, "vmap": rows,
               "devices": dev_rows}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    path = write_json(args.out or default_out("training", args.quick), payload)
    print(f"\nwritten: {path}")
    return payload


if __name__ == "__main__":
    main()
