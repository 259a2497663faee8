"""The launch scripts against stand-ins of `gcloud`, `srun` and `scontrol` (tests/launch/
standins.py): the exact commands a user's project receives, the playback of queued-resource
states and failing workers, the errors for missing settings; on a 2-worker stand-in
`run.sh` really starts a 2-process JAX program (a local pod) whose processes join through
the variables the script and the runtime set, and `multinode.sh` gives each task its id.
And shellcheck."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from align_jax.parallel.local_pod import free_port
from tests.launch import standins

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 900   # a guard against a hung script, not a speed goal
SETTINGS = {"PROJECT_ID": "my-project", "ZONE": "us-central2-b", "TPU_NAME": "align-v4",
            "ACCELERATOR_TYPE": "v4-8"}
WHERE = ["--zone=us-central2-b", "--project=my-project"]


def _script(tmp_path: Path, scenario: dict, script: str, *args: str, stdin=None,
            **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
  state = tmp_path / "standin"
  standins.install(tmp_path / "bin", state, scenario)
  base = {k: v for k, v in os.environ.items()
          if k not in SETTINGS and not k.startswith(("ALIGN_JAX_", "SLURM_", "JAX_"))}
  base.update(SETTINGS)
  base.update(env)
  base["PATH"] = f"{tmp_path / 'bin'}:{base['PATH']}"
  base["HOME"] = str(tmp_path / "home")
  done = subprocess.run(["bash", script, *args], cwd=REPO, env=base, capture_output=True,
                        text=True, timeout=TIMEOUT, stdin=stdin or subprocess.DEVNULL)
  return done, standins.calls(state)


def test_the_launch_scripts_are_shellcheck_clean():
  scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "launch").rglob("*.sh"))
  assert len(scripts) >= 7
  shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
  done = subprocess.run([shellcheck, "-x", *scripts, ".ci/run"], cwd=REPO, capture_output=True,
                        text=True, timeout=TIMEOUT)
  assert done.returncode == 0, done.stdout


def test_create_queues_spot_capacity_and_waits_until_active(tmp_path):
  scenario = {"states": ["WAITING_FOR_RESOURCES", "WAITING_FOR_RESOURCES", "PROVISIONING",
                         "ACTIVE"]}
  done, calls = _script(tmp_path, scenario, "launch/tpu/create.sh", "--spot",
                        TPU_POLL_SECONDS="0")
  assert done.returncode == 0, done.stderr
  assert calls[0] == ["gcloud", "compute", "tpus", "queued-resources", "create", "align-v4",
                      "--node-id=align-v4", "--accelerator-type=v4-8",
                      "--runtime-version=tpu-ubuntu2204-base", *WHERE, "--spot"]
  describe = ["gcloud", "compute", "tpus", "queued-resources", "describe", "align-v4", *WHERE,
              "--format=value(state.state)"]
  assert calls[1:] == [describe] * 4
  states = [line.split("state: ")[1] for line in done.stdout.splitlines() if "state: " in line]
  assert states == ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]   # each change once
  assert "TPU 'align-v4' is ready. Next: launch/tpu/setup.sh" in done.stdout


@pytest.mark.parametrize("options, command, flags", [
    (["--reserved", "--valid-until", "6h"], ["gcloud", "compute"],
     ["--reserved", "--valid-until-duration=6h"]),
    (["--best-effort", "--accelerator-type", "v5litepod-16"], ["gcloud", "alpha", "compute"],
     ["--best-effort"]),
])
def test_create_asks_for_the_capacity_chosen(tmp_path, options, command, flags):
  done, calls = _script(tmp_path, {}, "launch/tpu/create.sh", *options, "--no-wait")
  assert done.returncode == 0, done.stderr
  assert calls[0][:len(command)] == command and calls[0][-len(flags):] == flags
  assert len(calls) == 1 and "Queued. Check progress with:" in done.stdout
  if "--best-effort" in options:
    assert "--accelerator-type=v5litepod-16" in calls[0]
    assert "--runtime-version=v2-alpha-tpuv5-lite" in calls[0]


def test_create_stops_on_a_failed_request_and_on_a_refused_one(tmp_path):
  done, calls = _script(tmp_path, {"states": ["PROVISIONING", "FAILED"]},
                        "launch/tpu/create.sh", TPU_POLL_SECONDS="0")
  assert done.returncode == 1
  assert ("create.sh: error: queued resource 'align-v4' is FAILED; delete it with "
          "launch/tpu/teardown.sh") in done.stderr
  assert "state:\n  state: FAILED" in done.stderr   # the full description, for the reason
  refused, calls = _script(tmp_path / "again", {"create_fails": True}, "launch/tpu/create.sh")
  assert refused.returncode == 1 and len(calls) == 1
  assert "RESOURCE_EXHAUSTED: quota exceeded for v4-8" in refused.stderr


@pytest.mark.parametrize("missing", ["PROJECT_ID", "ZONE", "TPU_NAME"])
def test_a_missing_setting_is_named(tmp_path, missing):
  for script in ("create.sh", "setup.sh", "run.sh", "teardown.sh"):
    args = ["--", "--gin_file=gin/quickstart.gin"] if script == "run.sh" else []
    done, calls = _script(tmp_path, {}, f"launch/tpu/{script}", *args, **{missing: ""})
    assert done.returncode == 1 and calls == []
    assert done.stderr == (f"{script}: error: environment variable {missing} is not set "
                           "(see --help)\n")


def test_setup_ships_this_checkout_and_installs_the_pinned_jax_on_every_worker(tmp_path):
  done, calls = _script(tmp_path, {"workers": 2}, "launch/tpu/setup.sh")
  assert done.returncode == 0, done.stderr
  scp, install, check = calls
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[6:] == ["align-v4:align_jax.tar.gz", *WHERE, "--worker=all"]
  for worker in range(2):   # the archive of HEAD reached every worker
    listing = subprocess.run(["tar", "-tzf", tmp_path / "standin" / f"worker_{worker}" /
                              "align_jax.tar.gz"], capture_output=True, text=True, check=True)
    assert "setup.py" in listing.stdout.split()
  for call in (install, check):
    assert call[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "align-v4"]
    assert call[6:9] == [*WHERE, "--worker=all"] and call[9].startswith("--command=")
  assert "tar -xzf ~/align_jax.tar.gz -C ~/align_jax" in install[9]
  assert 'python -m pip install --quiet -e ~/align_jax "jax[tpu]==0.10.2"' in install[9]
  assert "jax.process_index()" in check[9] and "timeout 600 python" in check[9]
  assert "Setting up 'align-v4' with jax[tpu]==0.10.2" in done.stdout


def test_setup_fails_when_a_worker_is_unreachable(tmp_path):
  done, calls = _script(tmp_path, {"workers": 2, "failing_worker": 1}, "launch/tpu/setup.sh")
  assert done.returncode == 255
  assert "ssh: connect to host align-v4-w-1 port 22: Connection refused" in done.stderr
  assert [c[4] for c in calls] == ["scp", "ssh"]   # nothing after the failed step


def test_teardown_deletes_the_queued_resource_and_its_vms(tmp_path):
  done, calls = _script(tmp_path, {}, "launch/tpu/teardown.sh", "--yes")
  assert done.returncode == 0, done.stderr
  assert calls == [["gcloud", "compute", "tpus", "queued-resources", "delete", "align-v4",
                    *WHERE, "--force", "--quiet"]]
  asked, calls = _script(tmp_path / "again", {}, "launch/tpu/teardown.sh")
  assert asked.returncode == 1 and calls == []
  assert "not a terminal; pass --yes to delete without confirmation" in asked.stderr


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory) -> list[str]:
  """align_jax.main arguments of a 2-step pretraining run on the 8-device mesh."""
  from tests.test_readme_commands import _write_user_data
  data = tmp_path_factory.mktemp("launch_data")
  _write_user_data(data)
  subprocess.run([sys.executable, "-m", "align_jax.main", "--gin_file=gin/runs/vocabulary.gin",
                  f"--gin.WORKDIR='{data / 'vocab'}'", f"--gin.TRAIN_DATA='{data / 'text.jsonl'}'",
                  "--gin.VOCAB_SIZE=512"], cwd=REPO, check=True, capture_output=True,
                 timeout=TIMEOUT)
  return ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/pretrain.gin",
          "--gin_file=gin/mesh/cpu8.gin", f"--gin.TRAIN_DATA='{data / 'text.jsonl'}'",
          f"--gin.VOCABULARY='{data / 'vocab' / 'spm.model'}'", "--gin.STEPS=2",
          "--gin.DataConfig.batch_size=8", "--gin.DataConfig.seq_len=64",
          "--gin.LoopConfig.checkpoint_every=2"]


def _joined_pod(log: str, processes: int) -> None:
  """The log shows a program of `processes` processes and 8 devices that trained."""
  assert f"of {processes}, 8 global devices" in log
  assert "[align_jax] done; outputs in" in log


@pytest.mark.slow
def test_run_starts_a_real_pod_on_a_two_worker_slice(tmp_path, pretraining):
  state = tmp_path / "standin"
  venv = Path(sys.executable).parent
  for worker in range(2):   # what setup.sh leaves on a worker: the code and an environment
    home = state / f"worker_{worker}"
    (home / "align_jax_venv" / "bin").mkdir(parents=True)
    (home / "align_jax").symlink_to(REPO)
    (home / "align_jax_venv" / "bin" / "activate").write_text(f'export PATH="{venv}:$PATH"\n')
  workdir = tmp_path / "run"
  scenario = {"workers": 2, "execute": True, "pod": True, "devices": 4}
  done, calls = _script(tmp_path, scenario, "launch/tpu/run.sh", "--name", "pod1", "--",
                        *pretraining, f"--gin.WORKDIR='{workdir}'",
                        LOCAL_LOG_DIR=str(tmp_path / "local_logs"))
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  start, follow = calls
  # Each worker starts the program detached, in its own session, with every argument intact.
  line = next(x for x in start[9].splitlines() if "setsid nohup bash -c" in x)
  wrapper = shlex.split(line)[4]
  prefix = ("(cd ~/align_jax && source ~/align_jax_venv/bin/activate && export "
            "PYTHONUNBUFFERED=1 && python -m align_jax.main ")
  assert wrapper.startswith(prefix)
  assert shlex.split(wrapper[len(prefix):wrapper.index(")")]) == [
      *pretraining, f"--gin.WORKDIR='{workdir}'"]
  assert wrapper.endswith("; echo $? > ~/align_jax_logs/pod1/$(hostname).rc")
  assert follow[9].startswith("--command=h=$(hostname); d=~/align_jax_logs/pod1")
  for worker in range(2):
    log = (state / f"worker_{worker}" / "align_jax_logs" / "pod1" /
           f"align-v4-w-{worker}.log").read_text()
    _joined_pod(log, 2)
    assert f"jax.distributed: process {worker} of 2" in log
  combined = (tmp_path / "local_logs" / "pod1.log").read_text()
  assert "[align-v4-w-0] exit status: 0" in combined and "[align-v4-w-1] exit status: 0" in combined
  assert sorted(p.name for p in (workdir / "checkpoints" / "2" / "state").glob("ocdbt.*")) == [
      "ocdbt.process_0", "ocdbt.process_1"]
  # The same name again is refused on the workers; --tail shows each worker's log.
  again, _ = _script(tmp_path, scenario, "launch/tpu/run.sh", "--name", "pod1", "--",
                     *pretraining)
  assert again.returncode != 0 and "run 'pod1' already exists" in again.stderr
  tail, _ = _script(tmp_path, scenario, "launch/tpu/run.sh", "--tail", "pod1")
  assert tail.returncode == 0 and "== [align-v4-w-1]" in tail.stdout
  assert "(exit status: 0)" in tail.stdout


def test_multinode_starts_one_process_per_node_with_its_id(tmp_path):
  """Under an `srun` stand-in that runs each task here: every task gets the script's
  coordinator and count and its own id (a stand-in interpreter prints what it received;
  run.sh's test above runs real JAX processes the same way)."""
  port = free_port()
  python = tmp_path / "python"
  python.write_text('#!/bin/sh\necho "process $ALIGN_JAX_PROCESS_ID of $ALIGN_JAX_NUM_PROCESSES '
                    'via $ALIGN_JAX_COORDINATOR: $*"\n')
  python.chmod(0o755)
  args = ["--gin_file=gin/models/tiny.gin", "--gin.WORKDIR='runs/x y'"]
  done, calls = _script(tmp_path, {"nodes": ["gpu1", "gpu2"]}, "launch/gpu/multinode.sh", *args,
                        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu[1-2]",
                        ALIGN_JAX_PORT=str(port), LOG_DIR=str(tmp_path / "logs"),
                        PYTHON=str(python))
  assert done.returncode == 0, done.stderr
  assert calls[0] == ["scontrol", "show", "hostnames", "gpu[1-2]"]
  log_dir = tmp_path / "logs" / "slurm-4242"
  assert calls[1] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                      "--kill-on-bad-exit=1", f"--output={log_dir}/process-%t.log", "bash", "-c",
                      'export ALIGN_JAX_PROCESS_ID="$SLURM_PROCID"; exec "$0" -m align_jax.main '
                      '"$@"', str(python), *args]
  assert f"align_jax: 2 processes, coordinator gpu1:{port}" in done.stdout
  for task in range(2):
    assert (log_dir / f"process-{task}.log").read_text() == (
        f"process {task} of 2 via gpu1:{port}: -m align_jax.main {' '.join(args)}\n")


def test_multinode_needs_a_slurm_job(tmp_path):
  done, calls = _script(tmp_path, {}, "launch/gpu/multinode.sh", "--gin_file=gin/quickstart.gin")
  assert done.returncode == 1 and calls == []
  assert done.stderr == ("multinode.sh: error: not inside a SLURM job; submit with sbatch or "
                         "run inside salloc\n")
