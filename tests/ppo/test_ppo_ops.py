"""PPO arithmetic against numpy and hand-worked cases: the properties that catch known bugs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.ppo.ops import (AdaptiveKLController, explained_variance, gae, kl_penalty,
                               masked_mean, masked_var, masked_whiten, missing_eos_penalty,
                               policy_loss_terms, token_rewards, value_loss_terms)
from align_jax.ppo.rollouts import response_logprobs


def _batch(seed=0, batch=4, length=7):
  rng = np.random.default_rng(seed)
  lengths = np.array([7, 3, 5, 1])[:batch]
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float32)
  return rng.normal(size=(batch, length)).astype(np.float32), mask


def test_masked_statistics_equal_numpy_on_valid_positions():
  x, mask = _batch()
  x_padded = np.where(mask > 0, x, np.inf)  # whatever the padding holds must not matter
  valid = x[mask > 0]
  np.testing.assert_allclose(masked_mean(x_padded, mask), valid.mean(), atol=1e-6)
  np.testing.assert_allclose(masked_var(x_padded, mask), valid.var(ddof=1), rtol=1e-5)
  whitened = np.asarray(masked_whiten(jnp.asarray(x_padded), jnp.asarray(mask)))
  np.testing.assert_allclose(whitened[mask > 0], (valid - valid.mean()) / valid.std(ddof=1),
                             rtol=1e-4, atol=1e-5)
  assert (whitened[mask == 0] == 0).all()


def _gae_reference(rewards, values, mask, gamma, lam):
  advantages = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    n = int(mask[b].sum())
    last = 0.0
    for t in reversed(range(n)):
      next_value = values[b, t + 1] if t + 1 < n else 0.0
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      last = delta + gamma * lam * last
      advantages[b, t] = last
  return advantages


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_equals_reference_loop_and_ignores_masked_positions(gamma, lam):
  rewards, mask = _batch(1)
  values, _ = _batch(2)
  advantages, returns = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                            gamma, lam)
  np.testing.assert_allclose(advantages, _gae_reference(rewards, values, mask, gamma, lam),
                             atol=1e-5)
  np.testing.assert_allclose(returns, (np.asarray(advantages) + values) * mask, atol=1e-6)
  noisy = np.where(mask > 0, values, 123.0), np.where(mask > 0, rewards, -55.0)
  advantages2, _ = gae(jnp.asarray(noisy[1]), jnp.asarray(noisy[0]), jnp.asarray(mask), gamma, lam)
  np.testing.assert_allclose(advantages2, advantages, atol=1e-5)
  assert (np.asarray(advantages)[mask == 0] == 0).all()


def test_inf_and_nan_in_padding_never_reach_the_results():
  rewards, mask = _batch(7)
  values, _ = _batch(8)
  junk = lambda x, value: jnp.asarray(np.where(mask > 0, x, value))  # noqa: E731
  clean = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), 0.9, 0.8)
  dirty = gae(junk(rewards, np.nan), junk(values, np.inf), jnp.asarray(mask), 0.9, 0.8)
  for x, y in zip(clean, dirty):
    np.testing.assert_array_equal(x, y)
  scores = jnp.array([1.0, -2.0, 0.5, 3.0])
  placed = token_rewards(scores, junk(values, np.inf), mask, beta=0.1)
  np.testing.assert_array_equal(placed, token_rewards(scores, junk(values, 0.0), mask, beta=0.1))
  assert np.isfinite(np.asarray(placed)).all()
  terms = policy_loss_terms(junk(rewards, -np.inf), junk(values, np.nan), clean[0], mask)
  clean_terms = policy_loss_terms(jnp.asarray(rewards), jnp.asarray(values), clean[0], mask)
  for name, value in terms.items():
    np.testing.assert_array_equal(value, clean_terms[name], err_msg=name)
  assert (np.asarray(terms["log_ratio"])[mask == 0] == 0).all()


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
  rewards, mask = _batch(3)
  values, _ = _batch(4)
  advantages, _ = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), 1.0, 1.0)
  masked_rewards = rewards * mask
  to_go = np.cumsum(masked_rewards[:, ::-1], axis=1)[:, ::-1]
  np.testing.assert_allclose(np.asarray(advantages), (to_go - values) * mask, atol=1e-5)


def test_ratio_is_one_when_policy_equals_old_policy():
  logprobs, mask = _batch(5)
  advantages, _ = _batch(6)
  terms = policy_loss_terms(jnp.asarray(logprobs), jnp.asarray(logprobs),
                            jnp.asarray(advantages), jnp.asarray(mask))
  ratio_max = jnp.max(jnp.where(mask > 0, terms["ratio"], 0.0))
  assert float(masked_mean(terms["ratio"], mask)) == 1.0 and float(ratio_max) == 1.0
  assert float(masked_mean(0.5 * terms["log_ratio"] ** 2, mask)) == 0.0
  assert float(masked_mean(terms["clipped"], mask)) == 0.0
  np.testing.assert_allclose(masked_mean(terms["loss"], mask),
                             -(advantages * mask).sum() / mask.sum(), rtol=1e-6)


def test_policy_loss_clips_large_ratios():
  old = jnp.zeros((1, 2))
  new = jnp.log(jnp.array([[2.0, 0.5]]))
  advantages = jnp.array([[1.0, -1.0]])
  mask = jnp.ones((1, 2))
  terms = policy_loss_terms(new, old, advantages, mask, clip=0.2)
  # Token 1: min(2*1, 1.2*1) -> 1.2; token 2: -1*0.5 vs -1*0.8 -> the pessimistic -0.8.
  np.testing.assert_allclose(masked_mean(terms["loss"], mask), -(1.2 - 0.8) / 2, rtol=1e-6)
  assert float(masked_mean(terms["clipped"], mask)) == 1.0


def test_value_loss_clipping_and_explained_variance():
  returns = jnp.array([[1.0, 2.0, 3.0]])
  mask = jnp.ones((1, 3))
  value_loss = lambda values, clip: masked_mean(  # noqa: E731
      value_loss_terms(values, returns, returns, clip)["loss"], mask)
  assert float(value_loss(returns, 0.2)) == 0.0
  far = returns + 1.0
  unclipped = value_loss(far, None)
  clipped = value_loss(far, 0.2)
  np.testing.assert_allclose(unclipped, 0.5)
  np.testing.assert_allclose(clipped, 0.5)  # max(error, clipped error) keeps the larger one
  assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)


def test_kl_estimators_on_hand_cases():
  p = jnp.log(jnp.array([0.5, 0.25, 0.9]))
  q = jnp.log(jnp.array([0.25, 0.5, 0.9]))
  np.testing.assert_allclose(kl_penalty(p, q, "k1"), [np.log(2), -np.log(2), 0.0], atol=1e-6)
  x = np.array([np.log(2), -np.log(2), 0.0])
  np.testing.assert_allclose(kl_penalty(p, q, "k3"), np.exp(-x) - 1 + x, atol=1e-6)
  assert float(kl_penalty(p, q, "k3")[2]) == 0.0
  random = jax.random.normal(jax.random.key(0), (1000,)) * 5
  assert (np.asarray(kl_penalty(random, jnp.zeros(1000), "k3")) >= 0).all()
  extreme = kl_penalty(jnp.array([-1000.0]), jnp.array([0.0]), "k3")
  assert np.isfinite(np.asarray(extreme)).all()  # clamped before exp
  np.testing.assert_array_equal(kl_penalty(p, p, "k1"), 0.0)
  np.testing.assert_array_equal(kl_penalty(p, p, "k3"), 0.0)
  with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
    kl_penalty(p, q, "k2")


def test_adaptive_beta_moves_toward_the_target_within_its_clip():
  up = AdaptiveKLController(beta=0.1, target=6.0, horizon=100)
  assert up.update(kl=12.0, n_episodes=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # clipped +20%
  down = AdaptiveKLController(beta=0.1, target=6.0, horizon=100)
  assert down.update(kl=5.4, n_episodes=10) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
  assert AdaptiveKLController(0.1, 6.0, 100).update(6.0, 10) == pytest.approx(0.1)


def test_score_lands_once_on_the_last_response_token():
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
                   jnp.float32)
  scores = jnp.array([2.0, -1.0, 0.5, 9.0])
  rewards = np.asarray(token_rewards(scores, jnp.zeros_like(mask), mask, beta=0.1))
  expected_positions = [2, 0, 4]
  for row, position in enumerate(expected_positions):
    nonzero = np.flatnonzero(rewards[row])
    assert nonzero.tolist() == [position] and rewards[row, position] == scores[row]
  assert (rewards[3] == 0).all()  # an empty response gets nothing, not a pad-token reward
  kl = jnp.ones_like(mask)
  with_kl = np.asarray(token_rewards(scores, kl, mask, beta=0.1))
  np.testing.assert_allclose(with_kl[0], [-0.1, -0.1, 1.9, 0, 0], atol=1e-6)


def test_missing_eos_penalty_hits_exactly_rows_without_eos():
  scores = jnp.array([1.0, 2.0, 3.0, 4.0])
  has_eos = jnp.array([True, False, True, False])
  np.testing.assert_array_equal(missing_eos_penalty(scores, has_eos, -6.0), [1.0, -6.0, 3.0, -6.0])


def test_response_logprobs_in_chunks_equal_the_whole_and_a_hand_computation():
  config = TransformerConfig(vocab_size=50, num_layers=1, d_model=16, num_heads=2,
                             num_kv_heads=2, head_dim=8, mlp_dim=32, max_seq_len=16,
                             pad_id=0, eos_id=1, bos_id=2)
  model = Transformer(config)
  params = init_params(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"tokens": jnp.asarray(rng.integers(3, 50, (3, 16)), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (3, 16)),
           "segment_ids": jnp.ones((3, 16), jnp.int32)}
  start, temperature = 6, 0.7   # 10 response positions

  def total(p, chunk):
    logprobs, entropy = response_logprobs(model, p, batch, start, temperature, chunk)
    return (logprobs * 2.0 + entropy).sum(), (logprobs, entropy)

  (_, (whole_lp, whole_ent)), whole_grad = jax.value_and_grad(total, has_aux=True)(params, 30)
  # By hand from the model's logits.
  logits = np.asarray(model.apply({"params": params}, batch["tokens"], batch["positions"],
                                  batch["segment_ids"]), np.float64)[:, start - 1:-1]
  logp = logits / temperature - np.log(np.exp(logits / temperature).sum(-1, keepdims=True))
  targets = np.asarray(batch["tokens"])[:, start:]
  np.testing.assert_allclose(whole_lp, np.take_along_axis(logp, targets[..., None], -1)[..., 0],
                             atol=1e-5)
  np.testing.assert_allclose(whole_ent, -(np.exp(logp) * logp).sum(-1), atol=1e-5)
  for chunk in (3, 9, 12, 15):   # rows a chunk: 1, 3, 4 (the last one padded), 5 positions
    (_, (lp, ent)), grad = jax.value_and_grad(total, has_aux=True)(params, chunk)
    np.testing.assert_allclose(lp, whole_lp, atol=1e-6)
    np.testing.assert_allclose(ent, whole_ent, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(whole_grad)):
      np.testing.assert_allclose(a, b, atol=1e-5)
