"""Every Self-Align stage resumes after SIGKILL without duplicating a row: the pipeline
is killed inside each sampling stage (after a complete chunk, before the stage ends),
rerun each time, and its files end up equal to those of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path



from tests.methods.self_align.test_self_align_world import command_for

# (the sampling file to kill inside, its chunk size in records)
KILL_POINTS = ("self_instruct/round_1.jsonl", "red_team/question_samples.jsonl",
               "principle_answers/samples.jsonl", "verbose_answers/samples.jsonl")
CHUNKS = ["--gin.SelfInstructConfig.chunk_size=2", "--gin.RedTeamConfig.chunk_size=2",
          "--gin.AnswerConfig.chunk_size=4", "--gin.VerboseConfig.chunk_size=4"]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
          "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]),
                                         os.environ.get("PYTHONPATH", "")])}


def _start(workdir):
  return subprocess.Popen([sys.executable, "-m", "align_jax.main",
                           *command_for(workdir), *CHUNKS],
                          env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_inside(workdir, relative):
  """Runs the pipeline until `relative` has a complete chunk but is not finished, then
  SIGKILLs it; returns the records done at the kill."""
  sidecar = Path(workdir) / "seed_0" / f"{relative}.progress.json"
  child = _start(workdir)
  try:
    deadline = time.monotonic() + 600
    while True:
      assert child.poll() is None, child.stderr.read().decode()[-3000:]
      assert time.monotonic() < deadline, f"{relative}: no complete chunk in time"
      try:
        state = json.loads(sidecar.read_text())
      except (FileNotFoundError, json.JSONDecodeError):
        state = {"records_done": 0, "complete": False}
      if state["records_done"] > 0:
        break
      time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
  finally:
    if child.poll() is None:
      child.kill()
    child.stderr.close()
  state = json.loads(sidecar.read_text())
  assert not state["complete"], f"{relative} finished before the kill"
  return state["records_done"]


def _outputs(workdir):
  """Every jsonl row the stages wrote, by file (checkpoints and logs aside)."""
  root = Path(workdir) / "seed_0"
  return {str(p.relative_to(root)): p.read_text().splitlines()
          for p in sorted(root.rglob("*.jsonl"))
          if "metrics" not in p.name and "tensorboard" not in str(p)}


def test_killed_in_every_sampling_stage_the_pipeline_ends_as_an_uninterrupted_run(tmp_path):
  reference = tmp_path / "reference"
  child = _start(reference)
  assert child.wait(900) == 0, child.stderr.read().decode()[-3000:]
  child.stderr.close()

  killed = tmp_path / "killed"
  for relative in KILL_POINTS:
    assert _kill_inside(killed, relative) > 0
  child = _start(killed)
  assert child.wait(900) == 0, child.stderr.read().decode()[-3000:]
  child.stderr.close()

  want, got = _outputs(reference), _outputs(killed)
  assert set(got) == set(want)
  for name, rows in want.items():
    assert got[name] == rows, name
    if name.endswith("samples.jsonl") or "round_" in name:
      assert len(set(got[name])) == len(got[name]), f"{name} has a duplicated row"
