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


def start(args) -> subprocess.Popen:
  """`python <args>` with stdout discarded and stderr kept for failure messages."""
  return subprocess.Popen([sys.executable, *args], env=child_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after(child: subprocess.Popen, sidecar: Path, records: int, timeout: float) -> dict:
  """Waits until `sidecar` (a generate_to_jsonl progress file) records at least `records`
  records done, SIGKILLs the child and returns the sidecar's state then."""
  try:
    deadline = time.monotonic() + timeout
    while True:
      assert child.poll() is None, child.stderr.read().decode()[-3000:]
      assert time.monotonic() < deadline, f"{sidecar}: no complete chunk in time"
      try:
        done = json.loads(sidecar.read_text())["records_done"]
      except (FileNotFoundError, json.JSONDecodeError):
        done = 0
      if done >= records:
        break
      time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
  finally:
    if child.poll() is None:
      child.kill()
    child.stderr.close()
  return json.loads(sidecar.read_text())
