"""A pod on one machine: N processes of one program joined by JAX's multi-controller runtime.

    python -m align_jax.parallel.local_pod --processes 2 --devices 4 -- \\
        -m align_jax.main --gin_file=...

starts the Python program after `--` in `--processes` processes on this host, each with
`--devices` simulated CPU devices, exactly as the hosts of a TPU slice or a GPU cluster
run it: every process gets the coordinator address (a free loopback port), the process
count and its id in the variables `align_jax.parallel.initialize_distributed` reads, so
`jax.distributed.initialize` joins them into one program with `processes * devices`
global devices (collectives between processes over gloo). It is how the multi-host code
paths (global batches, per-host data shards, process-0 writes, host barriers) are
tested on one machine, and how a user tries a pod layout on a laptop.

Each process's output is printed line by line behind `[process K]` (and kept in
`--log_dir/process_K.log` when given). When a process fails, the others are stopped at
once and the pod exits with the failed process's status, naming it; with `--wait_all`
they are left to JAX's own failure detection instead (a host that stops answering is
reported by the others after `--heartbeat_timeout` seconds), as on a real pod.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Sequence


def free_port() -> int:
  """A TCP port on the loopback interface that nobody listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(process_id: int, processes: int, devices: int, port: int,
                heartbeat_timeout: int | None, base: dict[str, str] | None = None
                ) -> dict[str, str]:
  """The environment of one process of the pod."""
  env = dict(os.environ if base is None else base)
  env.update({"ALIGN_JAX_COORDINATOR": f"127.0.0.1:{port}",
              "ALIGN_JAX_NUM_PROCESSES": str(processes),
              "ALIGN_JAX_PROCESS_ID": str(process_id),
              "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)})
  # One way to set the device count: a forced count in XLA_FLAGS would override it.
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  if heartbeat_timeout is not None:
    env["ALIGN_JAX_HEARTBEAT_TIMEOUT"] = str(heartbeat_timeout)
  return env


def _relay(stream: IO[str], prefix: str, log: IO[str] | None, lock: threading.Lock) -> None:
  for line in stream:
    with lock:
      sys.stdout.write(f"{prefix}{line}" if line.endswith("\n") else f"{prefix}{line}\n")
      sys.stdout.flush()
      if log is not None:
        log.write(line)
        log.flush()


def run_pod(program: Sequence[str], processes: int = 2, devices: int = 4,
            heartbeat_timeout: int | None = 30, wait_all: bool = False,
            log_dir: str | None = None, grace_seconds: float = 10.0) -> int:
  """Runs `python <program>` as a pod of `processes` processes and returns its exit
  status: 0 when every process succeeded, else the first failed process's status (a
  process killed by a signal: 128 + the signal's number)."""
  if processes < 1 or devices < 1:
    raise ValueError(f"a pod needs at least one process and one device each, got "
                     f"processes={processes}, devices={devices}")
  if not program:
    raise ValueError("no program to run: give it after '--', e.g. -- -m align_jax.main ...")
  port = free_port()
  lock = threading.Lock()
  logs, procs, relays = [], [], []
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
  try:
    for k in range(processes):
      log = open(os.path.join(log_dir, f"process_{k}.log"), "w") if log_dir else None
      logs.append(log)
      proc = subprocess.Popen(
          [sys.executable, *program], env=process_env(k, processes, devices, port,
                                                      heartbeat_timeout),
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
      procs.append(proc)
      with lock:
        print(f"local pod: process {k} of {processes} started (pid {proc.pid})", flush=True)
      relay = threading.Thread(target=_relay, args=(proc.stdout, f"[process {k}] ", log, lock),
                               daemon=True)
      relay.start()
      relays.append(relay)
    status, failed = _watch(procs, wait_all)
    if failed is not None:
      others = [k for k, p in enumerate(procs) if k != failed and p.poll() is None]
      _stop(procs, grace_seconds)
      statuses = ", ".join(f"process {k}: {_exit_status(p.returncode)}"
                           for k, p in enumerate(procs))
      with lock:
        print(f"local pod: process {failed} of {processes} failed with status {status}"
              + (f"; stopped processes {others}" if others else "") + f" ({statuses})",
              file=sys.stderr, flush=True)
    return status
  finally:
    _stop(procs, grace_seconds)
    for relay in relays:
      relay.join(timeout=5)
    for log in logs:
      if log is not None:
        log.close()


def _exit_status(code: int) -> int:
  return 128 - code if code < 0 else code


def _watch(procs: Sequence[subprocess.Popen], wait_all: bool) -> tuple[int, int | None]:
  """Waits until every process ended, or (unless `wait_all`) until one failed: (status,
  index of the first failed process or None)."""
  first: tuple[int, int] | None = None
  while True:
    codes = [p.poll() for p in procs]
    for k, code in enumerate(codes):
      if code not in (None, 0) and first is None:
        first = (_exit_status(code), k)
    if first is not None and not wait_all:
      return first
    if all(code is not None for code in codes):
      return first if first is not None else (0, None)
    time.sleep(0.1)


def _stop(procs: Sequence[subprocess.Popen], grace_seconds: float) -> None:
  """SIGTERM to every live process (its whole group), SIGKILL after the grace period."""
  live = [p for p in procs if p.poll() is None]
  for p in live:
    os.killpg(p.pid, signal.SIGTERM)
  deadline = time.monotonic() + grace_seconds
  for p in live:
    try:
      p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait()


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  program = argv[argv.index("--") + 1:] if "--" in argv else []
  options = argv[:argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(
      prog="python -m align_jax.parallel.local_pod",
      description="Runs a Python program as a pod of processes on this machine.",
      epilog="Example: python -m align_jax.parallel.local_pod --processes 2 -- "
             "-m align_jax.main --gin_file=...")
  parser.add_argument("--processes", type=int, default=2, help="processes (hosts)")
  parser.add_argument("--devices", type=int, default=4, help="CPU devices per process")
  parser.add_argument("--heartbeat_timeout", type=int, default=30,
                      help="seconds before the others report a silent process")
  parser.add_argument("--wait_all", action="store_true",
                      help="on a failure, leave the others to JAX's failure detection")
  parser.add_argument("--log_dir", default=None, help="also write process_K.log here")
  args = parser.parse_args(options)
  try:
    return run_pod(program, args.processes, args.devices, args.heartbeat_timeout,
                   args.wait_all, args.log_dir)
  except ValueError as e:
    parser.error(str(e))
    return 2


if __name__ == "__main__":
  sys.exit(main())
