"""A real pod on this machine: `align_jax.parallel.local_pod` starts 2 (and 4) processes
joined by `jax.distributed` (gloo collectives, 8 CPU devices in all), and the user's
workflow (tests/parallel/pod_program.py) must give what one process with 8 devices
gives: losses and metrics within 1e-5, the same generated tokens, one completion record,
each host reading its own rows of every batch, each host writing its own checkpoint
shards. A failed process stops the pod with a message naming it; a process killed
mid-run, left to JAX (`--wait_all`), makes the survivor fail on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.readme_commands import gin_value, readme_pod_command
from tests.test_readme_commands import _write_user_data

REPO = Path(__file__).resolve().parents[2]
PROGRAM = str(REPO / "tests" / "parallel" / "pod_program.py")
TIMEOUT = 1200   # a guard against a hung pod, not a speed goal
# Counters of a step's work, not its results; compared separately (see below).
UNCOMPARED = ("tokens_per_s", "time/", "seconds", "per_s")


def _env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("ALIGN_JAX_", "JAX_NUM_CPU")) and k != "XLA_FLAGS"}
  return {**env, "PYTHONPATH": str(REPO), **extra}


def _pod(args: list[str], **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "align_jax.parallel.local_pod", *args],
                        cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=TIMEOUT, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
  folder = tmp_path_factory.mktemp("pod_data")
  _write_user_data(folder)
  subprocess.run([sys.executable, "-m", "align_jax.main", "--gin_file=gin/runs/vocabulary.gin",
                  f"--gin.WORKDIR='{folder / 'vocab'}'",
                  f"--gin.TRAIN_DATA='{folder / 'text.jsonl'}'", "--gin.VOCAB_SIZE=512"],
                 cwd=REPO, env=_env(), check=True, capture_output=True, timeout=TIMEOUT)
  return folder


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
  """The workflow in one process with 8 devices: the reference."""
  out = tmp_path_factory.mktemp("single")
  done = subprocess.run([sys.executable, PROGRAM, str(out), str(data)], cwd=REPO,
                        env=_env(JAX_NUM_CPU_DEVICES="8"), capture_output=True, text=True,
                        timeout=TIMEOUT)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return out


def _metrics(folder: Path, run: str) -> list[dict]:
  return [json.loads(line) for line in open(folder / run / "metrics.jsonl")]


def _assert_same_metrics(single: Path, pod: Path, runs: tuple[str, ...],
                         steps: int | None = None) -> None:
  """Every logged number but timings equal; `steps`: only the records up to that step,
  before the reference resumed (its resume event left out)."""
  for run in runs:
    ours, theirs = _metrics(single, run), _metrics(pod, run)
    if steps is not None:
      ours = [m for m in ours if m["step"] <= steps and "event" not in m]
      assert max(m["step"] for m in theirs) == steps
    assert [m["step"] for m in ours] == [m["step"] for m in theirs], run
    compared = 0
    for a, b in zip(ours, theirs):
      for key, value in a.items():
        if isinstance(value, (int, float)) and not any(u in key for u in UNCOMPARED):
          assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (run, a["step"], key)
          compared += 1
    assert compared > 5 * len(ours), run   # losses, norms and the data counters


def _assert_same_observations(single: Path, pod: Path, processes: int, parts: str) -> None:
  reference = json.load(open(single / "process_0.json"))
  assert reference["processes"] == 1 and reference["devices"] == 8
  assert min(len(batch[0]) for batch in reference["cut_rows"]) < 128   # cut short of seq_len
  writes = []
  for k in range(processes):
    seen = json.load(open(pod / f"process_{k}.json"))
    assert (seen["process"], seen["processes"], seen["devices"]) == (k, processes, 8)
    if parts == "all":
      assert seen["generated"] == reference["generated"]
      for ours, theirs in zip(reference["scores"], seen["scores"]):
        assert theirs == pytest.approx(ours, abs=1e-5)
    # Each host holds its own rows of every global batch (its shards of the data).
    rows = len(seen["rows"][0])
    assert rows == 8 // processes
    assert seen["rows"] == [batch[k * rows:(k + 1) * rows] for batch in reference["rows"]]
    # Batches cut after their longest row: every host cuts at the pod's longest row.
    assert seen["cut_rows"] == [batch[k * rows:(k + 1) * rows]
                                for batch in reference["cut_rows"]]
    assert seen["pipeline"]["result"] == {"processes": processes}
    writes += seen["pipeline"]["completion_writes"]
  assert writes == ["pipeline/only/COMPLETED.json"]   # process 0's, once
  # Every process wrote its own shards of the checkpoint.
  state = pod / "pre" / "checkpoints" / "4" / "state"
  assert sorted(p.name for p in state.glob("ocdbt.process_*")) == [
      f"ocdbt.process_{k}" for k in range(processes)]


@pytest.mark.slow
def test_pods_of_two_and_four_processes_run_as_one_process_does(data, single, tmp_path):
  """One test, so that the 1-process reference runs once whichever test worker runs it."""
  _two_processes(data, single, tmp_path)
  _four_processes(data, single, tmp_path)


def _two_processes(data: Path, single: Path, tmp_path: Path) -> None:
  out = tmp_path / "pod"
  done = _pod(["--processes", "2", "--devices", "4", "--", PROGRAM, str(out), str(data)])
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "[process 1] " in done.stdout and "[process 0] " in done.stdout
  _assert_same_metrics(single, out, ("pre", "sft", "reward", "ppo"))
  _assert_same_observations(single, out, 2, "all")
  generations = [(out / "gen" / "generations.jsonl"), (single / "gen" / "generations.jsonl")]
  pod_rows, single_rows = ([json.loads(line) for line in open(p)] for p in generations)
  assert len(pod_rows) == len(single_rows) == 16   # written once, by process 0
  for ours, theirs in zip(single_rows, pod_rows):
    assert [c["tokens"] for c in theirs["completions"]] == [
        c["tokens"] for c in ours["completions"]]
    for a, b in zip(ours["completions"], theirs["completions"]):
      assert b["logprobs"] == pytest.approx(a["logprobs"], abs=1e-5)


def _four_processes(data: Path, single: Path, tmp_path: Path) -> None:
  out = tmp_path / "pod4"
  done = _pod(["--processes", "4", "--devices", "2", "--", PROGRAM, str(out), str(data),
               "train"])
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  _assert_same_metrics(single, out, ("pre",), steps=4)
  _assert_same_observations(single, out, 4, "train")


def _killed_mid_run(data: Path, tmp_path: Path, *options: str) -> tuple[str, str, int]:
  """Starts launch/README.md's pod command (pretraining, 2 processes; with a long
  schedule and launcher `options`), kills process 1 (SIGKILL) once training steps are
  logged, and returns the pod's output and exit status."""
  (tmp_path / "runs").mkdir()
  (tmp_path / "runs" / "vocab").symlink_to(data / "vocab")
  (tmp_path / "text.jsonl").symlink_to(data / "text.jsonl")
  documented = readme_pod_command()
  split = documented.index("--")
  log_dir = tmp_path / "logs"
  command = [sys.executable, "-m", "align_jax.parallel.local_pod", *documented[:split],
             "--log_dir", str(log_dir), *options, *documented[split:],
             "--gin.STEPS=100000", "--gin.DataConfig.batch_size=8", "--gin.DataConfig.seq_len=64",
             "--gin.LoopConfig.checkpoint_every=100000", "--gin.LoopConfig.log_every=1"]
  workdir = tmp_path / gin_value(documented, "WORKDIR")
  stdout, stderr = tmp_path / "pod.out", tmp_path / "pod.err"
  with open(stdout, "w") as out, open(stderr, "w") as err:
    pod = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=out, stderr=err, text=True)
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
      assert pod.poll() is None, stdout.read_text()[-3000:] + stderr.read_text()[-3000:]
      assert time.monotonic() < deadline, "the pod never reached its second step"
      time.sleep(0.5)
    # The launcher prints each process's pid as it starts it.
    started = [line for line in stdout.read_text().splitlines()
               if line.startswith("local pod: process 1 of 2 started (pid ")]
    os.kill(int(started[0].rsplit("pid ", 1)[1].rstrip(")")), signal.SIGKILL)
    pod.wait(timeout=TIMEOUT)
  finally:
    if pod.poll() is None:
      pod.kill()
  return stdout.read_text(), stderr.read_text(), pod.returncode


def test_a_failed_process_stops_the_pod_with_a_message_naming_it(tmp_path):
  program = tmp_path / "program.py"
  program.write_text("import os, sys, time\n"
                     "if os.environ['ALIGN_JAX_PROCESS_ID'] == '1':\n"
                     "  print('process 1 gives up', flush=True)\n"
                     "  sys.exit(3)\n"
                     "time.sleep(600)\n")
  done = _pod(["--processes", "3", "--", str(program)])
  assert done.returncode == 3
  assert "[process 1] process 1 gives up" in done.stdout
  assert ("local pod: process 1 of 3 failed with status 3; stopped processes [0, 2] "
          f"(process 0: {128 + signal.SIGTERM}, process 1: 3, process 2: "
          f"{128 + signal.SIGTERM})") in done.stderr


@pytest.mark.slow
def test_left_to_jax_the_survivor_fails_after_the_heartbeat_timeout(data, tmp_path):
  out, err, status = _killed_mid_run(data, tmp_path, "--wait_all", "--heartbeat_timeout", "5")
  assert status == 128 + signal.SIGKILL
  survivor = (tmp_path / "logs" / "process_0.log").read_text()
  # JAX ends it: the collective it waits in loses its peer, or the coordination service
  # names the silent task (1); then the service's fatal-error exit.
  assert any(reason in survivor for reason in (
      "Connection closed by peer", "Task 1 heartbeat timeout",
      "unhealthy (stopped sending heartbeats):\n1\n"))
  assert "JAX distributed service detected fatal errors" in survivor
  assert "local pod: process 1 of 2 failed with status 137 (process 0: " in err
  assert "(process 0: 0," not in err and "stopped processes" not in err


def test_each_process_gets_the_coordinator_its_id_and_its_devices():
  from align_jax.parallel import local_pod
  env = local_pod.process_env(1, 2, 4, 1234, 30, base={
      "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1", "HOME": "h"})
  assert env == {"HOME": "h", "ALIGN_JAX_COORDINATOR": "127.0.0.1:1234",
                 "ALIGN_JAX_NUM_PROCESSES": "2", "ALIGN_JAX_PROCESS_ID": "1",
                 "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4",
                 "XLA_FLAGS": "--xla_cpu_foo=1", "ALIGN_JAX_HEARTBEAT_TIMEOUT": "30"}
  with pytest.raises(ValueError, match="no program to run"):
    local_pod.run_pod([])
  with pytest.raises(ValueError, match="processes=0"):
    local_pod.run_pod(["x.py"], processes=0)
