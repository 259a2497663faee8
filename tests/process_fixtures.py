"""Running a child process and SIGKILLing it once a generation sidecar shows progress."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]


def child_env() -> dict:
  """The environment of a child Python process that imports align_jax and the tests."""
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
          "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start(args, log: Path) -> subprocess.Popen:
  """`python <args>` with stdout discarded and stderr written to `log` (a file, never a
  pipe: a child that writes more than a pipe holds would block on it)."""
  with open(log, "wb") as stderr:   # the child keeps its own copy of the descriptor
    child = subprocess.Popen([sys.executable, *args], env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=stderr)
  child.log = Path(log)
  return child


def tail(child: subprocess.Popen, chars: int = 3000) -> str:
  """The end of what the child wrote to its log, for failure messages."""
  return child.log.read_text(errors="replace")[-chars:]


def kill_after(child: subprocess.Popen, sidecar: Path, records: int, timeout: float) -> dict:
  """Waits until `sidecar` (a generate_to_jsonl progress file) records at least `records`
  records done, SIGKILLs the child and returns the sidecar's state then."""
  try:
    deadline = time.monotonic() + timeout
    while True:
      assert child.poll() is None, tail(child)
      assert time.monotonic() < deadline, f"{sidecar}: no complete chunk in time"
      try:
        done = json.loads(sidecar.read_text())["records_done"]
      except (FileNotFoundError, json.JSONDecodeError):
        done = 0
      if done >= records:
        break
      time.sleep(0.01)
    assert child.poll() is None, f"the child ended before the kill:\n{tail(child)}"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
  finally:
    if child.poll() is None:
      child.kill()
  return json.loads(sidecar.read_text())
