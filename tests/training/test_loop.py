"""The training loop: accumulation, LoRA, NaN guard, checkpoint checks, kill-and-resume,
metrics after a resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.models import (Transformer, init_params, is_lora_path, merge_params,
                              param_shardings, split_params)
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.training import (Checkpointer, LoopConfig, NonFiniteLossError, OptimizerConfig,
                                TrainState, accumulate_gradients, init_train_state,
                                lm_loss_sums, make_lm_step, make_optimizer, read_metrics,
                                state_shardings, train_loop)
from training_fixtures import (CONFIG, SyntheticBatches, counting_step, run_training, scalar_shardings,
                               scalar_state)

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gradient_accumulation_does_not_depend_on_the_split():
  model = Transformer(CONFIG)
  params = init_params(model, jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in next(SyntheticBatches(0, batch=8)).items()}
  loss_sums = lambda p, mb: lm_loss_sums(model, p, mb)
  results = {}
  for micro in (1, 2, 8):
    total, weight, aux, grads = jax.jit(
        lambda b, m=micro: accumulate_gradients(loss_sums, params, None, b, m))(batch)
    results[micro] = (total / weight, jax.tree.map(lambda g: g / weight, grads))
  for micro in (2, 8):
    np.testing.assert_allclose(results[micro][0], results[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(results[micro][1]), jax.tree.leaves(results[1][1])):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_lora_trains_only_adapters_and_stores_only_them(tmp_path):
  config = CONFIG.replace(lora_rank=4)
  model = Transformer(config)
  mesh = create_mesh((1, 1, 1))
  full = init_params(model, jax.random.key(0), mesh)
  adapters, base = split_params(full, is_lora_path)
  base_before = jax.tree.map(np.asarray, base)
  opt_config = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=5)
  optimizer = make_optimizer(opt_config)
  p_shardings = split_params(param_shardings(model, mesh), is_lora_path)[0]
  shardings = state_shardings(optimizer, adapters, p_shardings, mesh)
  state, _ = train_loop(
      workdir=str(tmp_path), step_fn=make_lm_step(model, optimizer, opt_config),
      init_state=lambda: init_train_state(adapters, optimizer, 0, p_shardings, mesh),
      make_batches=SyntheticBatches, config=LoopConfig(total_steps=5, checkpoint_every=5,
                                                       progress_bar=False),
      mesh=mesh, rules=DEFAULT_RULES, shardings=shardings, frozen=base)
  trained = jax.tree.map(np.asarray, state.params)
  trained_names = {p[-1].key for p, _ in jax.tree_util.tree_leaves_with_path(trained)}
  assert trained_names == {f"{n}_lora_{ab}" for n in "qkvo" for ab in "ab"}
  # The adapters moved (B starts at zero), the base did not.
  assert all(np.abs(b).max() > 0 for p, b in jax.tree_util.tree_leaves_with_path(trained)
             if p[-1].key.endswith("_lora_b"))
  for a, b in zip(jax.tree.leaves(base_before), jax.tree.leaves(base)):
    np.testing.assert_array_equal(a, np.asarray(b))
  # The checkpoint holds the adapters (and their optimizer state) only.
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpointer.all_steps() == [5]
  stored = checkpointer._manager.item_metadata(5)["state"]["params"]
  stored_names = {p[-1].key for p, _ in jax.tree_util.tree_leaves_with_path(stored)}
  assert stored_names == trained_names
  checkpointer.close()
  # The trained model differs from the base model.
  tokens = jnp.arange(12).reshape(1, 12) % 97
  assert np.abs(np.asarray(model.apply({"params": merge_params(trained, base)}, tokens)
                           - model.apply({"params": full}, tokens))).max() > 1e-4


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  mesh = create_mesh((1, 1, 1))

  def step_fn(state, batch, frozen):
    step = state.step + 1
    loss = jnp.where(step == 5, jnp.nan, 1.0 / step)
    return state.replace(step=step, params=state.params + 1.0), {"loss": loss}

  init = scalar_state
  shardings = scalar_shardings(mesh)
  with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5; stopping without saving "
                                               r"this state; the last good checkpoint \(step 4\)"):
    train_loop(workdir=str(tmp_path), step_fn=step_fn, init_state=init,
               make_batches=SyntheticBatches,
               config=LoopConfig(total_steps=10, checkpoint_every=2, progress_bar=False),
               mesh=mesh, rules=DEFAULT_RULES, shardings=shardings)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpointer.latest_step() == 4
  state, record = checkpointer.restore(4, jax.eval_shape(init))
  assert float(state.params) == 4.0 and record["data_position"] == 4


def test_checkpoint_for_another_model_is_refused(tmp_path):
  run_training(str(tmp_path), total_steps=2, checkpoint_every=2, async_checkpoints=False)
  with pytest.raises(ValueError, match=r"model_config.vocab_size: checkpoint has 97, this run "
                                       r"expects 101"):
    run_training(str(tmp_path), total_steps=4, config=CONFIG.replace(vocab_size=101))
  with pytest.raises(ValueError, match=r"model_config.mlp_dim: checkpoint has 64"):
    run_training(str(tmp_path), total_steps=4, config=CONFIG.replace(mlp_dim=48))


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path):
  run_training(str(tmp_path), total_steps=2, checkpoint_every=2, async_checkpoints=False)
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  model = Transformer(CONFIG.replace(mlp_dim=48))
  optimizer = make_optimizer(OptimizerConfig())
  abstract = jax.eval_shape(lambda: init_train_state(init_params(model, jax.random.key(0)),
                                                     optimizer, 0))
  with pytest.raises(ValueError, match=r"params/layers_0/mlp/down_kernel: checkpoint \(64, 32\), "
                                       r"model \(48, 32\)"):
    checkpointer.restore(2, abstract)


_WORKER = textwrap.dedent("""
    import sys
    from training_fixtures import run_training
    run_training(sys.argv[1], total_steps=int(sys.argv[2]), checkpoint_every=3)
""")


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))}


@pytest.mark.slow
def test_sigkill_and_restart_reproduces_the_uninterrupted_run(tmp_path):
  env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
  command = [sys.executable, "-c", _WORKER]
  steps = 14
  clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
  subprocess.run(command + [clean, str(steps)], env=env, check=True, timeout=600,
                 capture_output=True)
  process = subprocess.Popen(command + [killed, str(steps)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  metrics = os.path.join(killed, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline:  # kill once step 8 is logged (checkpoints at 3 and 6)
    if os.path.exists(metrics) and any(json.loads(l).get("step", 0) >= 8
                                       for l in open(metrics) if l.strip()):
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  logged_before = max(json.loads(l)["step"] for l in open(metrics) if l.strip())
  assert logged_before < steps
  restart = subprocess.run(command + [killed, str(steps)], env=env, timeout=600,
                           capture_output=True, text=True)
  assert restart.returncode == 0, restart.stderr[-2000:]
  events = [json.loads(l) for l in open(metrics) if "resumed" in l]
  assert len(events) == 1 and 3 <= events[0]["step"] < steps
  a, b = _losses(clean), _losses(killed)
  assert sorted(a) == sorted(b) == list(range(1, steps + 1))
  for step in range(events[0]["step"] + 1, steps + 1):
    assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_best_checkpoint_survives_a_resume_with_worse_evaluations(tmp_path):
  mesh = create_mesh((1, 1, 1))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step_fn, init = counting_step, scalar_state
  eval_loss = {2: 1.0, 4: 0.5, 6: 0.9}  # best at step 4; step 6 (after the resume) is worse

  def run(total):
    train_loop(workdir=str(tmp_path), step_fn=step_fn, init_state=init,
               make_batches=SyntheticBatches,
               config=LoopConfig(total_steps=total, checkpoint_every=2, eval_every=2,
                                 keep_best_by="eval/loss", progress_bar=False),
               mesh=mesh, rules=DEFAULT_RULES,
               shardings=TrainState(step=replicated, params=replicated, opt_state=(),
                                    rng=replicated),
               eval_fn=lambda state, frozen: {"eval/loss": eval_loss[int(state.step)]})
  run(4)
  run(6)
  best = Checkpointer(str(tmp_path / "checkpoints_best"))
  assert best.all_steps() == [4] and best.read_record(4)["eval/loss"] == 0.5
  best.close()


def test_resume_logs_each_step_once_with_the_resumed_values(tmp_path):
  work = str(tmp_path)
  run_training(work, total_steps=6, checkpoint_every=3, async_checkpoints=False)
  metrics = os.path.join(work, "metrics.jsonl")
  first = {r["step"]: r["loss"] for r in map(json.loads, open(metrics)) if "loss" in r}
  # As if the run had died after logging step 6 but before its checkpoint was written;
  # the rerun (with another learning rate, so its steps differ) resumes from step 3.
  shutil.rmtree(os.path.join(work, "checkpoints", "6"))
  with open(metrics, "a") as f:
    f.write('{"step": 7, "loss": 1.')  # a line cut short by the crash
  run_training(work, total_steps=6, checkpoint_every=3, async_checkpoints=False,
               learning_rate=1e-2)
  rows = [json.loads(l) for l in open(metrics)]
  losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  assert [step for step, _ in losses] == [1, 2, 3, 4, 5, 6]
  assert all(loss == first[step] for step, loss in losses if step <= 4)  # before the update
  assert all(loss != first[step] for step, loss in losses if step > 4)
  assert [(r["step"], r["event"]) for r in rows if "event" in r] == [(3, "resumed")]
