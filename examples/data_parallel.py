"""Data-parallel training with ``jax.shard_map`` and with ``jax.pmap`` on 8 simulated CPU devices.

Each device embeds its shard of the global batch; ``supcon_loss(..., axis_name="data")``
gathers the other devices' embeddings and labels as references, so every anchor sees the
whole global batch; the conventional ``grads = jax.lax.pmean(grads, "data")`` then gives
exactly the single-device gradient on the concatenated batch (checked at the start).

    python examples/data_parallel.py                  # both modes, 300 steps each
    python examples/data_parallel.py --mode shard_map --steps 500
    python examples/data_parallel.py --quick          # 20 steps each

The simulated devices must be configured before jax is imported, which this file does; on
a machine with several accelerators, drop the XLA_FLAGS line.
"""
from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import argparse  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, PartitionSpec as P  # noqa: E402
from tqdm import tqdm  # noqa: E402

import jaxmetric  # noqa: E402
from common import format_metrics, load_digits_split, retrieval_report  # noqa: E402

AXIS = "data"


class EmbeddingMLP(nn.Module):
    dim: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.dim)(x)


MODEL = EmbeddingMLP()


def loss_fn(params, x, y, axis_name=None):
    return jaxmetric.supcon_loss(MODEL.apply({"params": params}, x), y, temperature=0.1, axis_name=axis_name)


def make_local_step(tx):
    """The per-device step: gradient inside the mapped function, then pmean over devices."""

    def local_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, AXIS)
        grads = jax.lax.pmean(grads, AXIS)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    return local_step


def make_shard_map_step(tx, mesh):
    # Parameters and optimizer state replicated (P()), the batch split over AXIS.
    step = jax.shard_map(
        make_local_step(tx), mesh=mesh, in_specs=(P(), P(), P(AXIS), P(AXIS)), out_specs=(P(), P(), P(), P())
    )
    return jax.jit(step)


def make_pmap_step(tx):
    # Classic pmap: parameters carry a leading device axis (replicated), so does the batch.
    return jax.pmap(make_local_step(tx), axis_name=AXIS)


def replicate(tree, n):
    return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n,) + a.shape), tree)


def first_replica(tree):
    return jax.tree.map(lambda a: np.asarray(a)[0], tree)


embed = jax.jit(lambda params, x: MODEL.apply({"params": params}, x))
single_device_value_and_grad = jax.jit(jax.value_and_grad(loss_fn))


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["shard_map", "pmap", "both"], default="both")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="20 steps per mode (smoke test)")
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--m", type=int, default=16, help="samples per class in the global batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = 20 if args.quick else args.steps
    start = time.time()

    n_dev = len(jax.devices())
    if args.global_batch % n_dev:
        raise SystemExit(f"--global-batch must be a multiple of the {n_dev} devices; got {args.global_batch}")
    print(f"{n_dev} devices: {jax.devices()[0].platform}, local batch {args.global_batch // n_dev}")
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    init_params = jax.jit(MODEL.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, x_train.shape[1])))["params"]
    tx = optax.adam(args.lr)

    def batches(seed):
        rng = np.random.default_rng(seed)
        for idx in jaxmetric.samplers.m_per_class_batches(y_train, args.m, args.global_batch, seed=seed, num_batches=steps):
            idx = rng.permutation(idx)  # spread the classes over the devices
            yield x_train[idx], y_train[idx]  # NumPy: the mapped step places the shards

    # The contract: the first step's loss and (pmean-ed) gradient equal the single-device ones.
    x0, y0 = next(batches(args.seed))
    ref_loss, ref_grads = single_device_value_and_grad(init_params, x0, y0)
    results = {"gradient_check": {}}
    modes = ["shard_map", "pmap"] if args.mode == "both" else [args.mode]
    for mode in modes:
        params, opt_state = init_params, jax.jit(tx.init)(init_params)
        if mode == "shard_map":
            step_fn = make_shard_map_step(tx, mesh)
        else:
            step_fn = make_pmap_step(tx)
            params, opt_state = replicate(params, n_dev), replicate(opt_state, n_dev)
        bar = tqdm(batches(args.seed), total=steps, desc=mode, unit="step")
        for i, (x, y) in enumerate(bar):
            if mode == "pmap":
                x, y = x.reshape(n_dev, -1, x.shape[1]), y.reshape(n_dev, -1)
            params, opt_state, loss, grads = step_fn(params, opt_state, x, y)
            if i == 0:
                if mode == "pmap":
                    loss0, grads0 = float(np.asarray(loss)[0]), first_replica(grads)
                else:
                    loss0, grads0 = float(loss), grads
                check = {"loss_diff": abs(loss0 - float(ref_loss)), "grad_diff": max_abs_diff(grads0, ref_grads)}
                results["gradient_check"][mode] = check
                tqdm.write(
                    f"{mode}: |loss - single-device loss| = {check['loss_diff']:.2e}, "
                    f"max |grad - single-device grad| = {check['grad_diff']:.2e}"
                )
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(np.mean(loss)):.3f}")
        if mode == "pmap":
            params = first_replica(params)
        emb = embed(params, x_test)
        metrics = retrieval_report(emb, y_test)
        print(f"{mode} after {steps} steps: {format_metrics(metrics)}")
        results[mode] = metrics
    print(f"total time: {time.time() - start:.1f} s")
    return results


if __name__ == "__main__":
    main()
