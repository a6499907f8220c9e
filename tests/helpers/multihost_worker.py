"""One process of the two-process jax.distributed check (run by tests/test_multihost.py).

Each process owns half of the batch; a shard_map step with axis_name over the global mesh
must give the single-process loss and gradient on the concatenated batch.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
except Exception:  # option renamed or default in newer jax
    pass

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402


def main():
    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
    import jaxmetric as jm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5))
    y = np.concatenate([np.zeros(4, int), rng.integers(0, 3, 12)])
    w = jnp.asarray(rng.normal(size=(5, 4)))
    results = {}
    mesh = Mesh(np.array(jax.devices()), ("d",))  # 2 processes x 2 local devices
    sharding = NamedSharding(mesh, P("d"))
    half = slice(pid * 8, (pid + 1) * 8)
    xg = jax.make_array_from_process_local_data(sharding, x[half])
    yg = jax.make_array_from_process_local_data(sharding, y[half])
    for name in ("supcon_loss", "triplet_margin_loss", "contrastive_loss", "ntxent_loss"):
        fn = getattr(jm, name)

        def step(w_, xl, yl, fn=fn):
            v, g = jax.value_and_grad(lambda ww: fn(xl @ ww, yl, axis_name="d"))(w_)
            return v, jax.lax.pmean(g, "d")

        sm = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("d"), P("d")), out_specs=(P(), P())))
        v, g = sm(w, xg, yg)
        v_ref, g_ref = jax.value_and_grad(lambda ww: fn(jnp.asarray(x) @ ww, jnp.asarray(y)))(w)
        results[name] = {
            "value": float(v), "value_ref": float(v_ref),
            "grad_err": float(np.max(np.abs(np.asarray(g) - np.asarray(g_ref)))),
            "grad_scale": float(np.max(np.abs(np.asarray(g_ref)))),
        }
    print("RESULT " + json.dumps({"process": pid, "devices": len(jax.devices()), "results": results}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
