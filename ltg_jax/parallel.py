"""Device mesh, multi-host set-up, host-local <-> global arrays (docs/design.md §3).

One 1-D mesh over all devices of all processes, axis `data`: parameters replicated, the batch
sharded. Model code never sees the device count; only this module and the jitted entry
points do.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

T = TypeVar("T")

DATA_AXIS = "data"
# Set to 1/true to call jax.distributed.initialize() (cluster auto-detection: Cloud TPU,
# SLURM, Open MPI, Kubernetes; or JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID).
DISTRIBUTED_ENV = "LTG_DISTRIBUTED"
# jax reads JAX_COORDINATOR_ADDRESS itself but not these two, so we pass them on.
_ENV_ARGS = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def maybe_initialize_distributed(enable: bool | None = None, **kwargs: Any) -> bool:
    """Call `jax.distributed.initialize(**kwargs)` when asked; returns whether it is initialised.

    Asked = `enable=True`, or `enable=None` and env LTG_DISTRIBUTED is 1/true. Must run before
    any other JAX call; calling it again is a no-op.
    """
    if enable is None:
        enable = os.environ.get(DISTRIBUTED_ENV, "").lower() in ("1", "true", "yes")
    if enable and not jax.distributed.is_initialized():
        for arg, env in _ENV_ARGS.items():
            if arg not in kwargs and os.environ.get(env):
                kwargs[arg] = int(os.environ[env])
        if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
            # CPU processes need a collectives backend to share arrays (the default has none).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kwargs)
    return jax.distributed.is_initialized()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh named `data` over the given devices (default: all devices of all processes)."""
    # jax.devices() order (grouped by process), not make_mesh's topology reordering: each
    # process then holds one contiguous block of the global batch (process_batch_slice).
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding for parameters and keys: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding for batched arrays: leading axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def is_process_zero() -> bool:
    """True on the process that writes shared files (metrics, configs, manifests)."""
    return jax.process_index() == 0


def progress(iterable: Iterable[T] | None = None, desc: str = "", **kwargs: Any) -> tqdm:
    """A tqdm bar shown on process 0 only (every process would show the same bar)."""
    return tqdm(iterable, desc=desc, disable=not is_process_zero(), **kwargs)


@contextlib.contextmanager
def ticking(bar: tqdm, note: str, every: float = 1.0) -> Iterator[None]:
    """Shows `note` on `bar` and keeps its clock running during one long call (a compile)."""
    bar.set_postfix_str(note)
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.set_postfix_str("")


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def all_finite(tree: Any) -> bool:
    """Whether every array of a pytree of global arrays is finite, alike on every process.

    A host-local check would stop only the process holding the bad rows and leave the others
    waiting at the next barrier.
    """
    return bool(_all_finite(jax.tree.leaves(tree)))


def sync(name: str) -> None:
    """Barrier across processes (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def process_batch_slice(global_batch: int) -> slice:
    """Rows of a global batch [global_batch] held by this process (contiguous, equal parts)."""
    n = jax.process_count()
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} must be divisible by {n} processes")
    per = global_batch // n
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def host_local_to_global(tree: Any, mesh: Mesh) -> Any:
    """Host-local batches [B_local, ...] -> global arrays [B_local * processes, ...] on `data`."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def global_to_host_local(tree: Any) -> Any:
    """Global batch-sharded arrays -> numpy arrays of the rows this process holds, in order."""

    def local(x: jax.Array) -> np.ndarray:
        # Replicated shards repeat the same rows; keep one per distinct row range.
        rows: dict[int, np.ndarray] = {}
        for shard in x.addressable_shards:
            start = shard.index[0].start or 0 if shard.index else 0
            rows.setdefault(start, np.asarray(shard.data))
        return np.concatenate([rows[k] for k in sorted(rows)], axis=0)

    return jax.tree.map(local, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host values (identical on every process) -> replicated global arrays on `mesh`."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)  # a no-op for arrays already placed so

    # Multi-process device_put refuses shardings with devices this process cannot address.
    def put(x):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x  # already there: no second copy
        x = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)
