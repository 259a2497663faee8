"""The fused output head + cross-entropy, and the chunked per-token log-probabilities,
against plain logits + log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.training.losses import head_chunk_rows, output_nll_sums, output_token_logprobs


def _reference(hidden, w_out, targets, weights):
  logits = hidden @ w_out
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1)[:, 0]
  return jnp.sum(nll * weights)


@pytest.mark.parametrize("chunk", [4, 7, 64, 4096])
def test_fused_head_matches_reference_value_and_gradients(chunk):
  keys = jax.random.split(jax.random.key(0), 4)
  n, d, vocab = 37, 16, 50  # 37 rows: the last chunk is padded for chunk 4 and 7
  hidden = jax.random.normal(keys[0], (n, d))
  w_out = jax.random.normal(keys[1], (d, vocab)) * 0.3
  targets = jax.random.randint(keys[2], (n,), 0, vocab)
  weights = (jax.random.uniform(keys[3], (n,)) > 0.3).astype(jnp.float32)
  nll, correct = output_nll_sums(hidden, w_out, targets, weights, chunk)
  np.testing.assert_allclose(nll, _reference(hidden, w_out, targets, weights), rtol=1e-5)
  hits = jnp.sum((jnp.argmax(hidden @ w_out, -1) == targets) * weights)
  assert float(correct) == float(hits)
  fused = jax.grad(lambda h, w: 3.0 * output_nll_sums(h, w, targets, weights, chunk)[0],
                   argnums=(0, 1))(hidden, w_out)
  plain = jax.grad(lambda h, w: 3.0 * _reference(h, w, targets, weights),
                   argnums=(0, 1))(hidden, w_out)
  for a, b in zip(fused, plain):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 7, 4096])
def test_chunked_token_logprobs_match_log_softmax_per_row_with_gradients(chunk):
  keys = jax.random.split(jax.random.key(1), 4)
  n, d, vocab = 37, 16, 50
  hidden = jax.random.normal(keys[0], (n, d))
  w_out = jax.random.normal(keys[1], (d, vocab)) * 0.3
  targets = jax.random.randint(keys[2], (n,), 0, vocab)
  logits = np.asarray(hidden @ w_out, np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = np.take_along_axis(logp, np.asarray(targets)[:, None], -1)[:, 0]
  got = output_token_logprobs(hidden, w_out, targets, chunk)
  assert got.shape == (n,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # A per-row cotangent (as DPO's pair margins give): the gradients of plain autodiff.
  scale = jax.random.normal(keys[3], (n,))

  def plain(h, w):
    picked = jnp.take_along_axis(jax.nn.log_softmax(h @ w), targets[:, None], -1)[:, 0]
    return jnp.sum(jnp.tanh(picked) * scale)

  chunked = jax.grad(lambda h, w: jnp.sum(jnp.tanh(output_token_logprobs(h, w, targets, chunk))
                                          * scale), argnums=(0, 1))(hidden, w_out)
  for a, b in zip(chunked, jax.grad(plain, argnums=(0, 1))(hidden, w_out)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_chunked_token_logprobs_of_a_bfloat16_model_keep_the_head_gradient_in_float32():
  keys = jax.random.split(jax.random.key(2), 3)
  n, d, vocab = 37, 16, 50
  hidden = jax.random.normal(keys[0], (n, d)).astype(jnp.bfloat16)
  w_out = jax.random.normal(keys[1], (d, vocab)) * 0.3   # float32 parameters
  targets = jax.random.randint(keys[2], (n,), 0, vocab)
  grads = {c: jax.grad(lambda w: output_token_logprobs(hidden, w, targets, c).sum())(w_out)
           for c in (4, 4096)}
  assert all(g.dtype == jnp.float32 for g in grads.values())
  want = jax.grad(lambda w: jnp.take_along_axis(jax.nn.log_softmax(
      hidden.astype(jnp.float32) @ w), targets[:, None], -1).sum())(w_out)
  for g in grads.values():   # bfloat16 products, float32 sums
    np.testing.assert_allclose(g, want, atol=0.05)


def test_head_chunk_rows_by_backend_and_vocabulary():
  assert head_chunk_rows(32000, "cpu") == 512      # 16.4M float32 logits per chunk
  assert head_chunk_rows(32000, "gpu") == 4096
  assert head_chunk_rows(256000, "gpu") == 512
  assert head_chunk_rows(10 ** 7, "cpu") == 128    # never below 128 rows
