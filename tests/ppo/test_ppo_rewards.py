"""Reward shaping and the AlpacaFarm-style PPO options against hand-worked values.

A composite reward with a sequence term and a dense step-separator term goes through
`shape_rewards` and GAE and is compared with plain Python loops; then each option of
`gin/runs/ppo_alpaca_farm.gin` (reward scale, k1 clamp, reward whitening, a schedule
stepped per iteration) on its own, and the preset itself.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from align_jax import main as entry
from align_jax.models import Transformer, TransformerConfig, TransformerWithHead, init_params
from align_jax.ppo import PPOConfig, assemble_rollouts, make_ppo_step
from align_jax.ppo import ops
from align_jax.ppo.rollouts import shape_rewards
from align_jax.ppo.step import response_values
from align_jax.rewards import CompositeReward, RewardBatch
from align_jax.training import (OptimizerConfig, init_train_state, learning_rate_schedule,
                                make_optimizer)

SEP, PAD, EOS = 7, 0, 1
STEP_REWARDS = (0.5, -0.25)        # the first and the second step separator of a response
STEP_WEIGHT = 2.0
BETA = 0.1
RESPONSES = np.array([[5, SEP, 9, 4, SEP, EOS],
                      [SEP, 6, SEP, EOS, PAD, PAD],
                      [3, SEP, 5, SEP, 8, 8]])
LENGTHS = np.array([6, 4, 6])
FINISHED = np.array([True, True, False])
SCORES = (1.0, -0.5, 2.0)
LOGPROBS = np.array([[-0.5, -1.0, -0.2, -0.7, -0.3, -0.1],
                     [-0.4, -2.0, -0.6, -0.2, -np.inf, -np.inf],
                     [-1.5, -0.3, -0.9, -0.4, -0.8, -1.1]], np.float32)
REF_LOGPROBS = np.array([[-0.7, -0.8, -0.2, -1.0, -0.1, -0.3],
                         [-0.9, -1.5, -0.4, -0.5, np.nan, np.nan],
                         [-1.0, -0.6, -0.7, -0.4, -1.2, -0.6]], np.float32)
VALUES = np.array([[0.3, -0.2, 0.5, 0.1, 0.4, 0.2],
                   [-0.1, 0.6, 0.2, 0.3, np.nan, np.inf],
                   [0.2, 0.0, -0.4, 0.7, 0.1, -0.3]], np.float32)
MASK = (np.arange(RESPONSES.shape[1])[None] < LENGTHS[:, None]).astype(np.float32)


def _reward_batch() -> RewardBatch:
  return RewardBatch(prompts=["p"] * 3, responses=["a", "b", "c"], response_lengths=LENGTHS,
                     finished=FINISHED, metadata=[{"score": s} for s in SCORES],
                     prompt_tokens=[[2, 3]] * 3, response_tokens=RESPONSES)


def _sequence_term(batch):
  return np.array([m["score"] for m in batch.metadata], np.float32)


def _step_term(junk: float):
  """STEP_REWARDS at the step separators of each response, `junk` after its end."""
  def term(batch):
    tokens = np.asarray(batch.response_tokens)
    values = np.zeros(tokens.shape, np.float32)
    for row, separators in enumerate(tokens == SEP):
      values[row, np.flatnonzero(separators)] = STEP_REWARDS
    values[np.arange(tokens.shape[1])[None] >= LENGTHS[:, None]] = junk
    return values
  return term


def _reference_rewards(penalty: float) -> list[list[float]]:
  rewards = []
  for row in range(len(LENGTHS)):
    n, separators, out = int(LENGTHS[row]), 0, []
    for t in range(n):
      r = -BETA * (float(LOGPROBS[row, t]) - float(REF_LOGPROBS[row, t]))
      if RESPONSES[row, t] == SEP:
        r += STEP_WEIGHT * STEP_REWARDS[separators]
        separators += 1
      if t == n - 1:
        r += SCORES[row] if FINISHED[row] else penalty
      out.append(r)
    rewards.append(out)
  return rewards


def _reference_gae(rewards, values, gamma, lam):
  """Advantages and returns, one list per response, by the textbook backward loop."""
  advantages, returns = [], []
  for row, row_rewards in enumerate(rewards):
    n, last, out = len(row_rewards), 0.0, [0.0] * len(row_rewards)
    for t in reversed(range(n)):
      next_value = float(values[row][t + 1]) if t + 1 < n else 0.0
      delta = row_rewards[t] + gamma * next_value - float(values[row][t])
      last = delta + gamma * lam * last
      out[t] = last
    advantages.append(out)
    returns.append([a + float(v) for a, v in zip(out, values[row])])
  return advantages, returns


def _padded(rows, length):
  return np.array([list(r) + [0.0] * (length - len(r)) for r in rows])


@pytest.mark.parametrize("junk", [0.0, np.nan, np.inf, -np.inf])
def test_dense_step_rewards_through_shaping_and_gae_equal_a_reference_loop(junk):
  gamma, lam, penalty = 0.9, 0.8, -1.0
  reward = CompositeReward({"score": (_sequence_term, 1.0),
                            "steps": (_step_term(junk), STEP_WEIGHT)}).score(_reward_batch())
  assert reward.dense is not None and np.isfinite(reward.dense).all()
  shaped = shape_rewards(reward.sequence, reward.dense, FINISHED, LOGPROBS, REF_LOGPROBS, MASK,
                         BETA, PPOConfig(missing_eos_penalty=penalty))
  length = RESPONSES.shape[1]
  expected_rewards = _reference_rewards(penalty)
  np.testing.assert_allclose(shaped.token_rewards, _padded(expected_rewards, length), atol=1e-6)
  assert (shaped.token_rewards[MASK == 0] == 0).all() and (shaped.kl[MASK == 0] == 0).all()
  # The sequence score (the penalty without EOS) plus the response's dense rewards.
  dense_total = STEP_WEIGHT * sum(STEP_REWARDS)
  np.testing.assert_allclose(shaped.scores, [1.0 + dense_total, -0.5 + dense_total,
                                             penalty + dense_total], atol=1e-6)

  advantages, returns = ops.gae(jnp.asarray(shaped.token_rewards), jnp.asarray(VALUES),
                                jnp.asarray(MASK), gamma, lam)
  values = [VALUES[row, :n] for row, n in enumerate(LENGTHS)]
  expected_advantages, expected_returns = _reference_gae(expected_rewards, values, gamma, lam)
  np.testing.assert_allclose(advantages, _padded(expected_advantages, length), atol=1e-6)
  np.testing.assert_allclose(returns, _padded(expected_returns, length), atol=1e-6)


@pytest.mark.parametrize("junk", [np.nan, np.inf])
def test_shape_rewards_ignores_dense_values_after_a_response_ends(junk):
  clean = _step_term(0.0)(_reward_batch())
  dirty = _step_term(junk)(_reward_batch())
  assert not np.isfinite(dirty[MASK == 0]).all()
  sequence = np.array(SCORES, np.float32)
  shaped = [shape_rewards(sequence, dense, FINISHED, LOGPROBS, REF_LOGPROBS, MASK, BETA,
                          PPOConfig()) for dense in (clean, dirty)]
  np.testing.assert_array_equal(shaped[1].token_rewards, shaped[0].token_rewards)
  np.testing.assert_array_equal(shaped[1].scores, shaped[0].scores)
  assert np.isfinite(shaped[1].token_rewards).all()


def test_reward_scale_applies_before_the_missing_eos_replacement_and_the_clip():
  sequence = np.array([0.3, -0.2, 0.5], np.float32)
  dense = np.zeros((3, 6), np.float32)
  dense[0, 1] = 0.1
  same = np.zeros((3, 6), np.float32)  # policy == reference: no KL term
  config = PPOConfig(reward_scale=10.0, missing_eos_penalty=-8.0)
  shaped = shape_rewards(sequence, dense, FINISHED, same, same, MASK, BETA, config)
  # 0.3 * 10 and -0.2 * 10 on the last tokens; the response without EOS gets -8 itself,
  # not -8 * 10; the dense reward is scaled too.
  last = LENGTHS - 1
  np.testing.assert_allclose(shaped.token_rewards[np.arange(3), last], [3.0, -2.0, -8.0],
                             rtol=1e-6)
  np.testing.assert_allclose(shaped.token_rewards[0, 1], 1.0, rtol=1e-6)
  np.testing.assert_allclose(shaped.scores, [4.0, -2.0, -8.0], rtol=1e-6)
  clipped = shape_rewards(sequence, None, FINISHED, same, same, MASK, BETA,
                          dataclasses.replace(config, score_clip=5.0))
  np.testing.assert_allclose(clipped.scores, [3.0, -2.0, -5.0], rtol=1e-6)
  unscaled = shape_rewards(sequence, dense, FINISHED, same, same, MASK, BETA, PPOConfig())
  np.testing.assert_allclose(unscaled.scores, [0.4, -0.2, 0.5], rtol=1e-6)


def test_k1_clamped_at_zero_gives_no_bonus_below_the_reference():
  logprobs = np.array([[-0.5, -1.2, -0.3, 0.0]], np.float32)
  ref_logprobs = np.array([[-1.0, -0.5, -0.3, 0.0]], np.float32)  # log-ratios 0.5, -0.7, 0
  mask = np.array([[1, 1, 1, 0]], np.float32)
  np.testing.assert_allclose(ops.kl_penalty(logprobs, ref_logprobs, "k1", clamp_min=0.0),
                             [[0.5, 0.0, 0.0, 0.0]], atol=1e-6)
  zero = np.zeros(1, np.float32)
  clamped = shape_rewards(zero, None, np.array([True]), logprobs, ref_logprobs, mask, BETA,
                          PPOConfig(kl_clamp_min=0.0))
  np.testing.assert_allclose(clamped.token_rewards, [[-0.05, 0.0, 0.0, 0.0]], atol=1e-7)
  np.testing.assert_allclose(clamped.kl.sum(axis=1), [0.5], atol=1e-6)
  plain = shape_rewards(zero, None, np.array([True]), logprobs, ref_logprobs, mask, BETA,
                        PPOConfig())
  np.testing.assert_allclose(plain.token_rewards, [[-0.05, 0.07, 0.0, 0.0]], atol=1e-7)
  with pytest.raises(ValueError, match="k1"):
    PPOConfig(kl_estimator="k3", kl_clamp_min=0.0)
  with pytest.raises(ValueError, match="k1"):
    ops.kl_penalty(logprobs, ref_logprobs, "k3", clamp_min=0.0)


def _whiten_keep_mean(rewards, mask):
  """numpy: (x - mean) / std + mean over the masked entries (Bessel's std), 0 elsewhere."""
  valid = rewards[mask > 0].astype(np.float64)
  mean = valid.mean()
  out = np.zeros(rewards.shape)
  out[mask > 0] = (valid - mean) / np.sqrt(valid.var(ddof=1) + 1e-8) + mean
  return out


def test_reward_whitening_divides_by_the_std_over_the_mask_and_keeps_the_mean():
  rng = np.random.default_rng(0)
  rewards = (3.0 * rng.normal(size=MASK.shape) + 1.5).astype(np.float32)
  padded = np.where(MASK > 0, rewards, np.nan)
  whitened = np.asarray(ops.masked_whiten(jnp.asarray(padded), jnp.asarray(MASK),
                                          shift_mean=False))
  np.testing.assert_allclose(whitened, _whiten_keep_mean(rewards, MASK), rtol=1e-5, atol=1e-6)
  valid = whitened[MASK > 0]
  np.testing.assert_allclose(valid.mean(), rewards[MASK > 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(valid.std(ddof=1), 1.0, rtol=1e-5)


def _rescale(rewards, mask):
  """numpy: x / std over the masked entries (Bessel's std), 0 elsewhere."""
  valid = rewards[mask > 0].astype(np.float64)
  out = np.zeros(rewards.shape)
  out[mask > 0] = valid / np.sqrt(valid.var(ddof=1) + 1e-8)
  return out


def test_keeping_the_mean_gives_reward_free_tokens_a_reward_that_adds_up_with_length():
  # Two responses with the same score, -5, on their last token and nothing else: 2 and 6
  # tokens. Whitening that keeps the mean gives each reward-free token
  # mean * (1 - 1 / std) < 0, so the longer response's return (sum of its rewards) is
  # lower; 'scale' keeps the zeros and the two returns equal.
  mask = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
  rewards = np.zeros(mask.shape, np.float32)
  rewards[0, 1] = rewards[1, 5] = -5.0
  kept = np.asarray(ops.masked_whiten(jnp.asarray(rewards), jnp.asarray(mask), shift_mean=False))
  scaled = np.asarray(ops.masked_rescale(jnp.asarray(rewards), jnp.asarray(mask)))
  np.testing.assert_allclose(kept, _whiten_keep_mean(rewards, mask), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scaled, _rescale(rewards, mask), rtol=1e-5, atol=1e-6)
  valid = rewards[mask > 0]
  shift = valid.mean() * (1 - 1 / valid.std(ddof=1))
  np.testing.assert_allclose(kept[1, :5], shift, rtol=1e-5)
  assert shift < -0.5
  np.testing.assert_allclose(kept.sum(1)[1] - kept.sum(1)[0], 4 * shift, rtol=1e-5)
  assert np.all(scaled[rewards == 0] == 0.0)
  np.testing.assert_allclose(scaled.sum(1)[0], scaled.sum(1)[1], rtol=1e-6)
  with pytest.raises(ValueError, match="whiten_rewards"):
    PPOConfig(whiten_rewards="yes")


@pytest.mark.parametrize("mode,reference", [(True, _whiten_keep_mean), ("scale", _rescale)])
def test_ppo_step_runs_gae_on_whitened_rewards(mode, reference):
  config = TransformerConfig(vocab_size=32, num_layers=1, d_model=16, num_heads=2,
                             num_kv_heads=1, head_dim=8, mlp_dim=32, max_seq_len=16)
  policy, value = Transformer(config), TransformerWithHead(config)
  params = {"policy": init_params(policy, jax.random.key(0)),
            "value": init_params(value, jax.random.key(1))}
  start, gamma, lam = 4, 0.9, 0.8
  rng = np.random.default_rng(1)
  lengths = np.array([6, 3, 5, 1])
  batch = assemble_rollouts([[2, 5], [2, 6, 7], [2], [2, 9, 9, 4]],
                            rng.integers(3, 32, (4, 6)), lengths, start, PAD)
  rewards = (4.0 * rng.normal(size=(4, 6)) + 2.0).astype(np.float32)
  batch["token_rewards"] = np.where(batch["response_mask"] > 0, rewards, 0.0)
  mask = batch["response_mask"]
  values = np.asarray(response_values(value, params["value"], batch, start))
  values_per_row = [values[row, :n] for row, n in enumerate(lengths)]
  optimizer = optax.sgd(0.0)
  ppo = PPOConfig(rollout_batch_size=4, mini_batch_size=4, num_epochs=1, max_prompt_len=start,
                  max_new_tokens=6, gamma=gamma, lam=lam, whiten_rewards=mode, exact_ratio=False)
  step = jax.jit(make_ppo_step(policy, value, ppo, optimizer, start))
  _, metrics = step(init_train_state(params, optimizer, 0), batch, None)

  def returns_mean(token_rewards):
    _, returns = _reference_gae([token_rewards[row, :n] for row, n in enumerate(lengths)],
                                values_per_row, gamma, lam)
    return np.mean([r for row in returns for r in row])

  expected = returns_mean(reference(batch["token_rewards"], mask))
  np.testing.assert_allclose(float(metrics["value/returns_mean"]), expected, rtol=1e-5,
                             atol=1e-5)
  assert abs(returns_mean(batch["token_rewards"]) - expected) > 0.5  # whitening mattered


def _learning_rates(optimizer: optax.GradientTransformation, updates: int) -> list[float]:
  """The step of every update on a constant unit gradient: Adam's step is then the
  learning rate (1-D parameter: no weight decay)."""
  params, grads = {"w": jnp.zeros(1)}, {"w": jnp.ones(1)}
  state, rates = optimizer.init(params), []
  for _ in range(updates):
    step, state = optimizer.update(grads, state, params)
    rates.append(-float(step["w"][0]))
  return rates


def test_schedule_stepped_per_iteration_keeps_one_learning_rate_per_iteration():
  # Warmup over one schedule step, then linear from 1.0 to 0.25 at step 3.
  config = OptimizerConfig(learning_rate=1.0, warmup_steps=1, total_steps=3, decay="linear",
                           end_lr_fraction=0.25, max_grad_norm=None)
  per_iteration = _learning_rates(make_optimizer(config, steps_per_schedule_step=3), 9)
  np.testing.assert_allclose(per_iteration, [0.0] * 3 + [1.0] * 3 + [0.625] * 3, rtol=1e-6)
  per_update = _learning_rates(make_optimizer(config), 5)
  np.testing.assert_allclose(per_update, [0.0, 1.0, 0.625, 0.25, 0.25], rtol=1e-6)
  schedule = learning_rate_schedule(config)
  np.testing.assert_allclose(per_update, [float(schedule(i)) for i in range(5)], rtol=1e-6)


def test_alpaca_farm_preset_parses_with_its_settings():
  gin.clear_config()
  try:
    entry.parse_gin(["gin/runs/ppo_alpaca_farm.gin", "gin/models/tiny.gin"],
                    ["WORKDIR = 'runs/ppo'", "PROMPTS = 'prompts.jsonl'", "STEPS = 10",
                     "VOCABULARY = 'vocab.model'", "POLICY_INIT = 'runs/sft'",
                     "REWARD_MODEL = 'runs/reward'"])
    expected = {"whiten_rewards": "scale", "reward_scale": 10.0, "kl_estimator": "k1",
                "kl_clamp_min": 0.0, "gamma": 1.0, "lam": 1.0, "value_loss_coef": 0.1,
                "num_epochs": 2, "missing_eos_penalty": -8.0, "schedule_per_iteration": True}
    for name, value in expected.items():
      assert gin.query_parameter(f"PPOConfig.{name}") == value, name
    assert gin.query_parameter("OptimizerConfig.eps") == 1e-5
    assert list(gin.query_parameter("CompositeReward.terms")) == ["reward_model"]
    ppo = gin.get_configurable("PPOConfig")()
    assert {name: getattr(ppo, name) for name in expected} == expected
    assert ppo.kl_coef == 0.05 and ppo.rollout_batch_size == 64  # from runs/ppo.gin
    assert gin.get_configurable("OptimizerConfig")().eps == 1e-5
  finally:
    gin.clear_config()
