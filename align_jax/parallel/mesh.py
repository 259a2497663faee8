"""Device meshes and multi-host start-up."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Starts JAX's multi-host runtime when this program runs on several hosts.

  On a TPU pod slice JAX finds its peers by itself; on GPU clusters the coordinator,
  process count and id come from the arguments or from the environment
  (`ALIGN_JAX_COORDINATOR`, `ALIGN_JAX_NUM_PROCESSES`, `ALIGN_JAX_PROCESS_ID`, or the
  variables SLURM / Open MPI set, which JAX reads itself). On one host it does nothing.
  `ALIGN_JAX_HEARTBEAT_TIMEOUT` (seconds, JAX's default 100) is how long the others
  wait for a host that stopped answering before they fail with an error naming it.
  Collectives between the CPU devices of several processes go over gloo (the CPU pod
  of `align_jax.parallel.local_pod`). Returns whether the runtime was initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("ALIGN_JAX_COORDINATOR")
  if num_processes is None and "ALIGN_JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["ALIGN_JAX_NUM_PROCESSES"])
  if process_id is None and "ALIGN_JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["ALIGN_JAX_PROCESS_ID"])
  multi_host_env = any(k in os.environ for k in (
      "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
  if coordinator_address is None and not multi_host_env:
    return False
  if multi_host_env and coordinator_address is None:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if hosts and len(hosts.split(",")) <= 1:
      return False  # a single-host TPU VM
  if jax.distributed.is_initialized():
    return True
  if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = {}
  if "ALIGN_JAX_HEARTBEAT_TIMEOUT" in os.environ:
    timeout["heartbeat_timeout_seconds"] = int(os.environ["ALIGN_JAX_HEARTBEAT_TIMEOUT"])
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id, **timeout)
  logging.info("jax.distributed: process %d of %d, %d global devices",
               jax.process_index(), jax.process_count(), jax.device_count())
  return True


def resolve_mesh_shape(shape: Sequence[int], num_devices: int,
                       axis_names: Sequence[str] = MESH_AXES) -> tuple[int, ...]:
  """Fills the one -1 entry of `shape` with the devices left over."""
  shape = [int(s) for s in shape]
  if len(shape) != len(axis_names):
    raise ValueError(f"mesh shape {tuple(shape)} has {len(shape)} entries but the axes are "
                     f"{tuple(axis_names)}")
  unknown = [i for i, s in enumerate(shape) if s == -1]
  if len(unknown) > 1:
    raise ValueError(f"mesh shape {tuple(shape)}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {tuple(shape)}: sizes must be positive or -1")
  known = math.prod(s for s in shape if s != -1)
  if unknown:
    if num_devices % known:
      raise ValueError(f"mesh shape {tuple(shape)}: {num_devices} devices are not divisible "
                       f"by the fixed axes' product {known}")
    shape[unknown[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh shape {dict(zip(axis_names, shape))} needs {math.prod(shape)} "
                     f"devices but {num_devices} are available")
  return tuple(shape)


def create_mesh(shape: Sequence[int] = (1, -1, 1),
                axis_names: Sequence[str] = MESH_AXES,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (or the given) devices; `shape` may hold one -1 for "the rest".

  Uses `jax.make_mesh`, which orders devices for the physical topology (ICI rings
  on TPU), when all devices are used.
  """
  all_devices = devices is None
  devices = list(jax.devices() if devices is None else devices)
  resolved = resolve_mesh_shape(shape, len(devices), axis_names)
  if all_devices:
    return jax.make_mesh(resolved, tuple(axis_names),
                         axis_types=(jax.sharding.AxisType.Auto,) * len(resolved))
  return Mesh(np.asarray(devices).reshape(resolved), tuple(axis_names))


def to_host(tree: Any) -> Any:
  """Every array of `tree` as a numpy array on this host, whole: a global array that
  spans other processes' devices is gathered from them (every process must call this
  together), the others are fetched as `jax.device_get` fetches them."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x
  return jax.tree.map(fetch, tree)
