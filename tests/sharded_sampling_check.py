"""Run with 8 fake CPU devices (tests/test_sampling.py does): sampler on 1 vs 8 devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_sampling_check.py
Prints OK on success; any mismatch raises.
"""

import jax
import jax.numpy as jnp
import numpy as np
import toy_diffusion as toy
from jax.sharding import PartitionSpec

from ltg_jax import parallel, sampling


def main() -> None:
    """Same seed, same images on a 1-device and an 8-device mesh; outputs sharded on `data`."""
    assert jax.device_count() == 8, f"need 8 fake devices, got {jax.device_count()}"
    params = toy.init_params()
    # unit-norm g: strong but not chaotic guidance, so f32 reduction order stays below 1e-5
    config = toy.config(
        4, w=1.0, start=0.25, stride=2, normalise="unit", grad_through="unet", recurrence=2
    )
    idx = jnp.arange(8, dtype=jnp.int32)
    labels = idx % toy.NUM_CLASSES

    mesh8 = parallel.data_mesh()
    mesh1 = parallel.data_mesh(jax.devices()[:1])
    out8 = sampling.make_sampler(config, toy.models(), mesh8)(
        params, idx, labels, jax.random.key(0)
    )
    out1 = sampling.make_sampler(config, toy.models(), mesh1)(
        params, idx, labels, jax.random.key(0)
    )
    err = {}
    for field in ("images", "latents", "signals"):
        a, b = np.asarray(getattr(out8, field)), np.asarray(getattr(out1, field))
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=field)
        err[field] = float(np.max(np.abs(a - b)))

    spec = PartitionSpec(parallel.DATA_AXIS)
    for x in out8:
        assert x.sharding.spec == spec and x.sharding.mesh.shape[parallel.DATA_AXIS] == 8
        shards = x.addressable_shards
        assert len(shards) == 8 and all(s.data.shape[0] == 1 for s in shards)
        assert len({s.device for s in shards}) == 8

    # host-local <-> global helpers round-trip (single process holds all rows)
    local = np.arange(16, dtype=np.float32).reshape(8, 2)
    glob = parallel.host_local_to_global(local, mesh8)
    assert glob.sharding.spec == spec and glob.shape == (8, 2)
    np.testing.assert_array_equal(parallel.global_to_host_local(glob), local)
    assert parallel.process_batch_slice(8) == slice(0, 8) and parallel.is_process_zero()
    print("OK max |8 devices - 1 device|:", err)


if __name__ == "__main__":
    main()
