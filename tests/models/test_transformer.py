"""Model behaviour: default arguments, KV cache, packing, scan/remat equivalence, heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.models import (Transformer, TransformerWithHead, init_cache, init_params,
                              param_logical_axes)
from align_jax.models.transformer import rope_inverse_frequencies, RopeScaling


def _decode_stepwise(model, params, tokens, prompt_len, cache_len, **kw):
  cache = init_cache(model.config, tokens.shape[0], cache_len)
  first, cache = model.apply({"params": params}, tokens[:, :prompt_len], cache=cache, **kw)
  outs = [first]
  for t in range(prompt_len, tokens.shape[1]):
    step, cache = model.apply({"params": params}, tokens[:, t:t + 1], cache=cache)
    outs.append(step)
  return jnp.concatenate(outs, axis=1), cache


def test_tokens_only_call_returns_logits(tiny_config):
  model = Transformer(tiny_config)
  params = init_params(model, jax.random.key(0))
  tokens = jnp.arange(14, dtype=jnp.int32).reshape(2, 7)
  logits = model.apply({"params": params}, tokens)
  assert logits.shape == (2, 7, tiny_config.vocab_size) and logits.dtype == jnp.float32
  explicit = model.apply({"params": params}, tokens, jnp.broadcast_to(jnp.arange(7), (2, 7)),
                         jnp.ones((2, 7), jnp.int32))
  np.testing.assert_array_equal(logits, explicit)


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("sliding_window", [None, 3])
def test_prefill_then_decode_equals_full_forward(tiny_config, scan_layers, sliding_window):
  config = tiny_config.replace(scan_layers=scan_layers, sliding_window=sliding_window)
  model = Transformer(config)
  params = init_params(model, jax.random.key(1))
  tokens = jax.random.randint(jax.random.key(2), (3, 11), 0, config.vocab_size)
  full = model.apply({"params": params}, tokens)
  stepwise, cache = _decode_stepwise(model, params, tokens, prompt_len=5, cache_len=16)
  np.testing.assert_allclose(stepwise, full, atol=1e-5, rtol=0)
  assert int(cache["index"]) == 11
  # A sliding window must actually change something for the check above to mean anything.
  if sliding_window:
    no_window = Transformer(config.replace(sliding_window=None)).apply({"params": params}, tokens)
    assert np.abs(np.asarray(no_window[:, 5:] - full[:, 5:])).max() > 1e-4


def test_left_padded_prompt_in_cache_matches_unpadded(tiny_config):
  model = Transformer(tiny_config)
  params = init_params(model, jax.random.key(3))
  tokens = jax.random.randint(jax.random.key(4), (1, 6), 0, tiny_config.vocab_size)
  reference = model.apply({"params": params}, tokens)
  pad = 3
  padded = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), tokens], axis=1)
  positions = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), jnp.arange(6)[None]], axis=1)
  segments = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), jnp.ones((1, 6), jnp.int32)], axis=1)
  cache = init_cache(tiny_config, 1, 12)
  logits, _ = model.apply({"params": params}, padded, positions, segments, cache=cache)
  np.testing.assert_allclose(logits[:, pad:], reference, atol=1e-5)


def test_packed_segments_do_not_attend_across(tiny_config):
  model = Transformer(tiny_config)
  params = init_params(model, jax.random.key(5))
  a = jax.random.randint(jax.random.key(6), (1, 5), 0, tiny_config.vocab_size)
  b = jax.random.randint(jax.random.key(7), (1, 4), 0, tiny_config.vocab_size)
  packed = jnp.concatenate([a, b], axis=1)
  positions = jnp.concatenate([jnp.arange(5), jnp.arange(4)])[None]
  segments = jnp.array([[1] * 5 + [2] * 4])
  logits = model.apply({"params": params}, packed, positions, segments)
  np.testing.assert_allclose(logits[:, :5], model.apply({"params": params}, a), atol=1e-5)
  np.testing.assert_allclose(logits[:, 5:], model.apply({"params": params}, b), atol=1e-5)


@pytest.mark.parametrize("sliding_window", [None, 6])
@pytest.mark.parametrize("variant", [dict(attention_block=4), dict(attention_impl="xla")])
def test_attention_variants_equal_one_block(tiny_config, sliding_window, variant):
  """Query blocks that skip later keys, and jax.nn.dot_product_attention with the mask as
  bias and is_causal: same logits and gradients, packed and padded rows included."""
  one = Transformer(tiny_config.replace(attention_block=0, sliding_window=sliding_window))
  blocked = Transformer(tiny_config.replace(sliding_window=sliding_window, **variant))
  params = init_params(one, jax.random.key(10))
  tokens = jax.random.randint(jax.random.key(11), (2, 16), 0, tiny_config.vocab_size)
  positions = jnp.array([list(range(16)), list(range(7)) + list(range(9))])
  segments = jnp.array([[1] * 16, [1] * 7 + [2] * 7 + [0] * 2])
  loss = lambda m, p: jnp.mean(m.apply({"params": p}, tokens, positions, segments) ** 2)
  np.testing.assert_allclose(one.apply({"params": params}, tokens, positions, segments),
                             blocked.apply({"params": params}, tokens, positions, segments),
                             atol=1e-5)
  g1, g2 = jax.grad(lambda p: loss(one, p))(params), jax.grad(lambda p: loss(blocked, p))(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_scan_and_remat_match_unrolled(tiny_config):
  unrolled = Transformer(tiny_config)
  params = init_params(unrolled, jax.random.key(8))
  stacked = {k: v for k, v in params.items() if not k.startswith("layers_")}
  stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                   *[params[f"layers_{i}"] for i in range(tiny_config.num_layers)])
  scanned = Transformer(tiny_config.replace(scan_layers=True, remat_policy="full"))
  tokens = jax.random.randint(jax.random.key(9), (2, 9), 0, tiny_config.vocab_size)
  loss = lambda m, p: jnp.mean(jax.nn.log_softmax(m.apply({"params": p}, tokens)) ** 2)
  np.testing.assert_allclose(loss(unrolled, params), loss(scanned, stacked), rtol=1e-6)
  g1 = jax.grad(lambda p: loss(unrolled, p))(params)
  g2 = jax.grad(lambda p: loss(scanned, p))(stacked)
  np.testing.assert_allclose(g1["layers_1"]["mlp"]["up_kernel"],
                             g2["layers"]["mlp"]["up_kernel"][1], atol=1e-7)


def test_bfloat16_compute_stays_close(tiny_config):
  model32 = Transformer(tiny_config)
  params = init_params(model32, jax.random.key(10))
  tokens = jax.random.randint(jax.random.key(11), (2, 8), 0, tiny_config.vocab_size)
  logits32 = model32.apply({"params": params}, tokens)
  logits16 = Transformer(tiny_config.replace(dtype="bfloat16")).apply({"params": params}, tokens)
  assert logits16.dtype == jnp.float32  # logits are always returned in float32
  assert np.abs(np.asarray(logits16 - logits32)).max() < 0.05


def test_every_parameter_has_logical_axes(tiny_config):
  for config in (tiny_config, tiny_config.replace(scan_layers=True, qkv_bias=True)):
    axes = param_logical_axes(Transformer(config))
    for spec in jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)):
      assert spec and all(name is not None for name in spec)


def test_llama3_rope_scaling_matches_hand_computation():
  config_kw = dict(vocab_size=8, num_layers=1, d_model=16, num_heads=1, num_kv_heads=1,
                   head_dim=16, mlp_dim=8, rope_theta=10000.0)
  from align_jax.models import TransformerConfig
  plain = rope_inverse_frequencies(TransformerConfig(**config_kw))
  np.testing.assert_allclose(plain, 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16), rtol=1e-6)
  scaled = rope_inverse_frequencies(TransformerConfig(
      **config_kw, rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 64)))
  wavelength = 2 * np.pi / plain
  assert np.allclose(scaled[wavelength < 16], plain[wavelength < 16])       # high freq kept
  assert np.allclose(scaled[wavelength > 64], plain[wavelength > 64] / 8)   # low freq divided
  medium = (wavelength >= 16) & (wavelength <= 64)
  assert medium.any()
  assert np.all(scaled[medium] < plain[medium]) and np.all(scaled[medium] > plain[medium] / 8)


def test_head_reads_backbone_hidden_states(tiny_config):
  model = TransformerWithHead(tiny_config)
  params = init_params(model, jax.random.key(12))
  tokens = jax.random.randint(jax.random.key(13), (2, 5), 0, tiny_config.vocab_size)
  scores = model.apply({"params": params}, tokens)
  assert scores.shape == (2, 5)
  hidden = Transformer(tiny_config).apply({"params": params["backbone"]}, tokens, output="hidden")
  head = params["head"]
  np.testing.assert_allclose(scores, hidden @ head["kernel"][:, 0] + head["bias"][0], atol=1e-5)
  std = float(np.std(np.asarray(head["kernel"])))
  assert 0.5 / np.sqrt(33) < std < 2 / np.sqrt(33)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs a GPU")
def test_cudnn_attention_matches_native_in_bfloat16():
  """On a GPU (run with JAX_PLATFORMS=cuda): the fused cuDNN kernel, packed rows
  included, is as close to a float32 reference as the bf16 einsum attention is."""
  from align_jax.models import TransformerConfig
  config = TransformerConfig(vocab_size=512, num_layers=2, d_model=256, num_heads=4,
                             num_kv_heads=2, head_dim=64, mlp_dim=512, max_seq_len=256)
  reference = Transformer(config)
  params = init_params(reference, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 256), 0, 512)
  positions = jnp.array([list(range(256)), list(range(100)) + list(range(156))])
  segments = jnp.array([[1] * 256, [1] * 100 + [2] * 156])

  def run(model):
    loss = lambda p: jnp.mean(model.apply({"params": p}, tokens, positions, segments) ** 2)
    return (model.apply({"params": params}, tokens, positions, segments),
            jax.grad(loss)(params))

  exact, exact_grads = run(reference)
  for name, (logits, grads) in {
      "native": run(Transformer(config.replace(dtype="bfloat16"))),
      "cudnn": run(Transformer(config.replace(dtype="bfloat16", attention_impl="cudnn")))}.items():
    error = float(jnp.max(jnp.abs(logits - exact)) / jnp.max(jnp.abs(exact)))
    grad_error = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
                     for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(exact_grads)))
    print(name, error, grad_error)
    assert error < 0.03 and grad_error < 0.05, (name, error, grad_error)
