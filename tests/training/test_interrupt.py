"""SIGINT/SIGTERM during training: the step finishes, a checkpoint is saved, a rerun resumes."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import pytest

from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.training import Checkpointer, Hook, LoopConfig, TrainState, train_loop
from align_jax.training.loop import TrainingInterrupted
from training_fixtures import SyntheticBatches, counting_step, run_training, scalar_state

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# run_training, with each batch delayed by argv[3] seconds so that a signal lands mid-run.
_WORKER = textwrap.dedent("""
    import sys, time
    import training_fixtures

    class SlowBatches(training_fixtures.SyntheticBatches):
      def __next__(self):
        time.sleep(float(sys.argv[3]))
        return super().__next__()

    training_fixtures.SyntheticBatches = SlowBatches
    training_fixtures.run_training(sys.argv[1], total_steps=int(sys.argv[2]), checkpoint_every=100)
""")


def _steps(directory):
  checkpointer = Checkpointer(directory)
  try:
    return checkpointer.all_steps()
  finally:
    checkpointer.close()


def _loss_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_sigint_saves_the_step_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
  # The rerun reads the interrupted worker's compiled programs from a persistent cache.
  env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  command = [sys.executable, "-c", _WORKER]
  steps = 40
  clean, stopped = str(tmp_path / "clean"), str(tmp_path / "stopped")
  process = subprocess.Popen(command + [stopped, str(steps), "0.5"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  run_training(clean, total_steps=steps, checkpoint_every=100)  # meanwhile, the reference
  metrics = os.path.join(stopped, "metrics.jsonl")
  deadline = time.time() + 120
  while time.time() < deadline and process.poll() is None:  # stop once step 2 is logged
    if os.path.exists(metrics) and any(json.loads(l).get("step", 0) >= 2
                                       for l in open(metrics) if l.endswith("\n")):
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  time.sleep(0.1)
  process.send_signal(signal.SIGINT)  # a second Ctrl-C does not cut the checkpoint short
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "Traceback" not in stderr
  assert "[align_jax] SIGINT ignored: already stopping to save a checkpoint" in stderr
  match = re.search(r"^\[align_jax\] interrupted at step (\d+): checkpoint saved in (\S+); "
                    r"rerun the same command to resume$", stderr, flags=re.M)
  assert match, stderr[-2000:]
  step = int(match.group(1))
  assert 2 <= step < steps and match.group(2) == os.path.join(stopped, "checkpoints")
  assert _steps(match.group(2)) == [step]
  assert max(s for s, _ in _loss_rows(stopped)) == step

  rerun = subprocess.run(command + [stopped, str(steps), "0"], env=env, timeout=300,
                         capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f"resuming from step {step}" in rerun.stdout
  assert _loss_rows(stopped) == _loss_rows(clean)
  assert [s for s, _ in _loss_rows(stopped)] == list(range(1, steps + 1))


def test_sigterm_stops_in_process_and_restores_the_handlers(tmp_path):
  mesh = create_mesh((1, 1, 1))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step_fn, init = counting_step, scalar_state

  def preempt(step, state, metrics):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  def run(hooks=()):
    return train_loop(workdir=str(tmp_path), step_fn=step_fn, init_state=init,
                      make_batches=SyntheticBatches,
                      config=LoopConfig(total_steps=6, checkpoint_every=100, progress_bar=False),
                      mesh=mesh, rules=DEFAULT_RULES,
                      shardings=TrainState(step=replicated, params=replicated, opt_state=(),
                                           rng=replicated), hooks=hooks)

  before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
  with pytest.raises(TrainingInterrupted) as stopped:
    run([Hook(every=1, fn=preempt)])
  assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.step == 3
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
  assert _steps(str(tmp_path / "checkpoints")) == [3]
  state, _ = run()
  assert int(state.step) == 6 and float(state.params) == 6.0
  assert [s for s, _ in _loss_rows(str(tmp_path))] == [1, 2, 3, 4, 5, 6]
