"""Reward models: the pairwise loss learns synthetic preferences; process labels; normalisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.data.pipeline import BatchIterator
from align_jax.models import TransformerWithHead, init_params
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.training import (LoopConfig, OptimizerConfig, fit_normalization, init_train_state,
                                make_optimizer, make_train_step, pairwise_loss_sums,
                                process_loss_sums, read_metrics, sequence_scores, state_shardings,
                                train_loop)
from align_jax.models import param_shardings
from training_fixtures import CONFIG

GOOD = 7  # the preferred responses use this token often, the rejected ones never


def _pairs(n, seed=0):
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(n):
    prompt = [2] + rng.integers(10, 90, 4).tolist()
    length = int(rng.integers(3, 8))
    good = rng.integers(10, 90, length)
    good[rng.random(length) < 0.5] = GOOD
    bad = rng.integers(10, 90, length)
    examples.append({"chosen_tokens": np.array(prompt + good.tolist() + [1], np.int32),
                     "chosen_loss_mask": np.array([0] * 5 + [1] * (length + 1), np.int32),
                     "rejected_tokens": np.array(prompt + bad.tolist() + [1], np.int32),
                     "rejected_loss_mask": np.array([0] * 5 + [1] * (length + 1), np.int32)})
  return examples


def test_pairwise_reward_model_learns_synthetic_preferences(tmp_path):
  model = TransformerWithHead(CONFIG)
  mesh = create_mesh((1, 1, 1))
  opt_config = OptimizerConfig(learning_rate=3e-3, warmup_steps=5, total_steps=60)
  optimizer = make_optimizer(opt_config)
  p_shardings = param_shardings(model, mesh)
  params = init_params(model, jax.random.key(0), mesh)
  train, heldout = _pairs(256), _pairs(64, seed=1)
  step = make_train_step(functools.partial(pairwise_loss_sums, model), optimizer, opt_config)
  state, _ = train_loop(
      workdir=str(tmp_path), step_fn=step,
      init_state=lambda: init_train_state(params, optimizer, 0, p_shardings, mesh),
      make_batches=lambda position: BatchIterator(train, kind="preference", batch_size=16,
                                                  seq_len=16, start_position=position),
      config=LoopConfig(total_steps=60, checkpoint_every=60, progress_bar=False), mesh=mesh,
      rules=DEFAULT_RULES, shardings=state_shardings(optimizer, params, p_shardings, mesh))
  losses = [r["loss"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))]
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])   # log 2 = 0.69 at the start
  batch = next(BatchIterator(heldout, kind="preference", batch_size=64, seq_len=16,
                             shuffle=False))
  total, weight, aux = pairwise_loss_sums(model, state.params,
                                          {k: jnp.asarray(v) for k, v in batch.items()})
  assert float(aux["correct"] / weight) >= 0.9  # held-out pair accuracy


def test_sequence_score_is_read_at_the_last_real_token():
  model = TransformerWithHead(CONFIG)
  params = init_params(model, jax.random.key(1))
  tokens = jnp.array([[2, 5, 6, 1, 0, 0], [2, 9, 1, 0, 0, 0]])
  segments = (jnp.arange(6)[None] < jnp.array([[4], [3]])).astype(jnp.int32)
  scores = sequence_scores(model, params, tokens, segments)
  per_token = model.apply({"params": params}, tokens, None, segments)
  np.testing.assert_allclose(scores, [per_token[0, 3], per_token[1, 2]], rtol=1e-6)
  # Padding after the last token does not change the score.
  alone = sequence_scores(model, params, tokens[:1, :4], segments[:1, :4])
  np.testing.assert_allclose(alone, scores[:1], atol=1e-5)


def test_process_loss_counts_only_labelled_positions():
  model = TransformerWithHead(CONFIG)
  params = init_params(model, jax.random.key(2))
  # Step labels on tokens 1 (good) and 4 (bad), an outcome label on the EOS (good).
  example = {"tokens": np.array([2, 5, 6, 7, 8, 1], np.int32),
             "label_values": np.array([-1, 1, -1, -1, 0, 1], np.int32)}
  batch = next(BatchIterator([example], kind="process", batch_size=1, seq_len=8,
                             shuffle=False))
  total, weight, aux = process_loss_sums(model, params, {k: jnp.asarray(v)
                                                         for k, v in batch.items()})
  scores = model.apply({"params": params}, jnp.asarray(example["tokens"])[None])[0]
  expected = (-jax.nn.log_sigmoid(scores[1]) - jax.nn.log_sigmoid(-scores[4])
              - jax.nn.log_sigmoid(scores[5]))
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert float(weight) == 3.0
  right = int(scores[1] > 0) + int(scores[4] <= 0) + int(scores[5] > 0)
  assert float(aux["correct"]) == right


def test_normalisation_gives_reference_scores_mean_zero_std_one():
  scores = np.random.default_rng(0).normal(3.0, 2.5, 500)
  norm = fit_normalization(scores)
  normalised = norm["gain"] * scores + norm["bias"]
  assert abs(normalised.mean()) < 1e-9 and abs(normalised.std() - 1) < 1e-9
