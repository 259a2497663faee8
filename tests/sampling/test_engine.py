"""The generation engine against the full forward, scoring, transformers and itself."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from align_jax.hf import load_checkpoint
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.sampling import Sampler, SamplingConfig, process_logits, top_k_mask, top_p_mask
from align_jax.sampling.strategies import sample_tokens

EOS = 1
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [3], [20, 21, 22, 23, 24]]


@pytest.fixture(scope="module")
def model_and_params():
  config = TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4,
                             num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=64,
                             eos_id=EOS, pad_id=0)
  model = Transformer(config)
  return model, init_params(model, jax.random.key(0))


@pytest.fixture(scope="module")
def sampler(model_and_params):
  model, params = model_and_params
  return Sampler(model, params, batch_size=4, length_buckets=(8, 16, 32))


def _argmax_reference(model, params, prompt, steps):
  """Greedy decoding by full forwards (no cache) over a fixed-size causal buffer."""
  forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
  buffer = np.zeros((1, 32), np.int32)
  buffer[0, :len(prompt)] = prompt
  length = len(prompt)
  for _ in range(steps):
    token = int(jnp.argmax(forward(buffer)[0, length - 1]))
    buffer[0, length] = token
    length += 1
    if token == EOS:
      break
  return buffer[0, len(prompt):length].tolist()


def _row(result, i, s=0):
  return result.tokens[i, s, :result.lengths[i, s]].tolist()


def test_greedy_equals_stepwise_argmax_of_full_forward(sampler, model_and_params):
  model, params = model_and_params
  result = sampler.generate(PROMPTS, SamplingConfig(max_new_tokens=12, temperature=0),
                            jax.random.key(0))
  for i, prompt in enumerate(PROMPTS):
    assert _row(result, i) == _argmax_reference(model, params, prompt, 12)


def test_reported_logprobs_equal_scoring(sampler):
  for temperature in (1.0, 0.7):
    result = sampler.generate(PROMPTS, SamplingConfig(max_new_tokens=10, temperature=temperature,
                                                      num_samples=2), jax.random.key(3))
    prompts = [p for p in PROMPTS for _ in range(2)]
    rows = [_row(result, i, s) for i in range(len(PROMPTS)) for s in range(2)]
    model_scores = sampler.score(prompts, rows)
    tempered = sampler.score(prompts, rows, temperature=temperature)
    for k, (i, s) in enumerate((i, s) for i in range(len(PROMPTS)) for s in range(2)):
      n = result.lengths[i, s]
      np.testing.assert_allclose(result.model_logprobs[i, s, :n], model_scores[k], atol=1e-5)
      # Temperature only: the sampling distribution is the tempered model.
      np.testing.assert_allclose(result.logprobs[i, s, :n], tempered[k], atol=1e-5)


def test_padding_and_batch_composition_do_not_change_rows(model_and_params):
  model, params = model_and_params
  greedy = SamplingConfig(max_new_tokens=8, temperature=0)
  sampled = SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=2)
  key = jax.random.key(7)
  alone = Sampler(model, params, batch_size=1, length_buckets=(4, 8, 16, 32))
  mixed = Sampler(model, params, batch_size=3, length_buckets=(16, 32))
  for config in (greedy, sampled):
    a = alone.generate([PROMPTS[0]], config, key)
    # Same prompt at index 0, now with longer neighbours (bucket 16) and another batch size.
    b = mixed.generate([PROMPTS[0], PROMPTS[1], PROMPTS[3]], config, key)
    np.testing.assert_array_equal(a.tokens[0], b.tokens[0])
    np.testing.assert_allclose(a.logprobs[0], b.logprobs[0], atol=1e-5)


def test_samples_sharing_a_prefill_equal_samples_prefilled_alone(model_and_params):
  """A batch prefills only its distinct prompts and copies their cache to their samples'
  rows; the rows must equal those of a sampler that prefills every row by itself."""
  model, params = model_and_params
  config = SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=5)
  key = jax.random.key(5)
  alone = Sampler(model, params, batch_size=1, length_buckets=(16, 32))
  per_row = Sampler(model, params, batch_size=8, length_buckets=(16, 32), share_prefill=False)
  shared = Sampler(model, params, batch_size=8, length_buckets=(16, 32))
  assert alone.prefill_rows(5) == 1
  # Batches of 8 rows over groups of 5 (rows 0-7, 8-15, ...) meet at most 3 groups.
  assert shared.prefill_rows(5) == 3
  assert shared.prefill_rows(4) == 2 and shared.prefill_rows(1) == 8
  widths = {}  # rows each compiled call prefills
  for name, sampler in (("per_row", per_row), ("shared", shared)):
    def spy(params, prompt, *rest, _jit=sampler._generate_jit, _name=name, **kwargs):
      widths.setdefault(_name, []).append(prompt.shape[0])
      return _jit(params, prompt, *rest, **kwargs)
    sampler._generate_jit = spy
  outputs = [s.generate(PROMPTS, config, key) for s in (alone, per_row, shared)]
  # 20 rows in batches of 8: the shared sampler prefills 3 rows a batch, the other 8.
  assert widths == {"per_row": [8, 8, 8], "shared": [3, 3, 3]}
  for other in outputs[1:]:
    np.testing.assert_array_equal(outputs[0].tokens, other.tokens)
    np.testing.assert_array_equal(outputs[0].lengths, other.lengths)
    np.testing.assert_allclose(outputs[0].logprobs, other.logprobs, atol=1e-5)
    np.testing.assert_allclose(outputs[0].model_logprobs, other.model_logprobs, atol=1e-5)


def test_same_key_same_samples_and_rows_independent(sampler):
  config = SamplingConfig(max_new_tokens=10, temperature=1.0, num_samples=4)
  a = sampler.generate(PROMPTS[:2], config, jax.random.key(11))
  b = sampler.generate(PROMPTS[:2], config, jax.random.key(11))
  c = sampler.generate(PROMPTS[:2], config, jax.random.key(12))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  # The samples of one prompt differ from each other (independent randomness per row).
  assert len({tuple(a.tokens[0, s]) for s in range(4)}) == 4


def test_top_k_and_top_p_never_leave_the_allowed_set():
  logits = jax.random.normal(jax.random.key(0), (4, 50)) * 3
  keys = jax.random.split(jax.random.key(1), 4)
  allowed_k = np.argsort(-np.asarray(logits), axis=-1)[:, :5]
  probs = np.asarray(jax.nn.softmax(logits, -1))
  nucleus = []
  for row in probs:
    order = np.argsort(-row)
    mass_before = np.cumsum(row[order]) - row[order]
    nucleus.append(set(order[mass_before < 0.6].tolist()))
  for step in range(200):
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    k_tokens = sample_tokens(step_keys, top_k_mask(logits, 5), greedy=False)
    p_tokens = sample_tokens(step_keys, top_p_mask(logits, 0.6), greedy=False)
    for r in range(4):
      assert int(k_tokens[r]) in allowed_k[r]
      assert int(p_tokens[r]) in nucleus[r]
  # The masks keep exactly those sets.
  assert np.isfinite(np.asarray(top_k_mask(logits, 5))).sum(-1).tolist() == [5] * 4
  assert [int(x) for x in np.isfinite(np.asarray(top_p_mask(logits, 0.6))).sum(-1)] == \
      [len(s) for s in nucleus]


def test_engine_top_k_one_is_greedy(sampler):
  greedy = sampler.generate(PROMPTS, SamplingConfig(max_new_tokens=6, temperature=0),
                            jax.random.key(0))
  top1 = sampler.generate(PROMPTS, SamplingConfig(max_new_tokens=6, temperature=1.3, top_k=1),
                          jax.random.key(5))
  np.testing.assert_array_equal(greedy.tokens, top1.tokens)


def test_logit_bias_min_new_tokens_and_eos_truncation(sampler):
  config = SamplingConfig(max_new_tokens=10, temperature=1.0, min_new_tokens=3,
                          logit_bias=((EOS, 1e4),))
  result = sampler.generate(PROMPTS, config, jax.random.key(2))
  assert result.lengths.tolist() == [[4]] * len(PROMPTS)     # 3 banned steps, then EOS
  assert (result.tokens[:, 0, 3] == EOS).all() and (result.tokens[:, 0, :3] != EOS).all()
  assert (result.tokens[:, 0, 4:] == 0).all() and (result.logprobs[:, 0, 4:] == 0).all()
  assert result.finished.all()
  banned = sampler.generate(PROMPTS, SamplingConfig(max_new_tokens=10, temperature=0,
                                                    logit_bias=((EOS, -1e9),)), jax.random.key(2))
  assert not (banned.tokens == EOS).any() and not banned.finished.any()
  assert (banned.lengths == 10).all()


def test_process_logits_order():
  logits = jnp.array([[0.0, 1.0, 2.0, 3.0]])
  stop = jnp.array([False, False, False, True])
  config = SamplingConfig(temperature=2.0, min_new_tokens=1, logit_bias=((0, 10.0),))
  out = np.asarray(process_logits(logits, jnp.array(0), config, stop))
  np.testing.assert_allclose(out[0, :3], [5.0, 0.5, 1.0])
  assert out[0, 3] == -np.inf
  later = np.asarray(process_logits(logits, jnp.array(1), config, stop))
  np.testing.assert_allclose(later[0], [5.0, 0.5, 1.0, 1.5])


def test_penalties_on_hand_worked_logits():
  from align_jax.sampling.strategies import apply_penalties, ngram_bans, token_counts
  logits = jnp.array([[2.0, -1.0, 0.5, 3.0]])
  seen = jnp.array([[True, True, False, False]])
  counts = jnp.array([[0, 2, 1, 0]], jnp.int32)
  out = apply_penalties(logits, SamplingConfig(repetition_penalty=2.0), seen, None, None)
  np.testing.assert_allclose(out[0], [1.0, -2.0, 0.5, 3.0])
  out = apply_penalties(logits, SamplingConfig(frequency_penalty=0.5, presence_penalty=0.25),
                        None, counts, None)
  np.testing.assert_allclose(out[0], [2.0, -2.25, -0.25, 3.0])
  # Row 0 is [pad, pad, 5, 6, 7, 5, 6] (start 2): after "5 6" came 7, so 7 is banned for
  # n=3; for n=2 the last token 6 was followed by 7. Row 1 is [3, 3, 3, 4, 3, 3, 3]: for
  # n=3, "3 3" was followed by 3 and by 4.
  history = jnp.array([[0, 0, 5, 6, 7, 5, 6, 0], [3, 3, 3, 4, 3, 3, 3, 0]])
  start, length = jnp.array([2, 0]), jnp.array(7)
  bans = lambda n: [np.flatnonzero(r).tolist() for r in ngram_bans(history, start, length, n, 9)]
  assert bans(3) == [[7], [3, 4]]
  assert bans(2) == [[7], [3, 4]]
  assert bans(1) == [[5, 6, 7], [3, 4]]          # every token the row has
  assert bans(6) == [[], []]                      # no earlier 6-gram shares the last five
  # The padding of row 0 never counts: with start 2 and length 3 it has one token.
  assert ngram_bans(history, start, jnp.array(3), 2, 9)[0].sum() == 0
  np.testing.assert_array_equal(token_counts(history[:, :4], history[:, :4] > 0, 9)[1],
                                [0, 0, 0, 3, 1, 0, 0, 0, 0])


def test_compiled_penalties_never_emit_what_they_ban(sampler):
  """Sampled rows (T=1.5, shared prefills, padding) never repeat a bigram of their prompt
  and continuation under no_repeat_ngram_size=2, and never repeat a token of their
  continuation under a prohibitive presence penalty."""
  prompts = [[5, 6, 7, 5], [8, 9], [3, 3, 4], [20, 21, 22, 23, 24]]
  # Three favoured tokens make repeats likely without the penalties.
  config = SamplingConfig(max_new_tokens=24, temperature=1.5, num_samples=3,
                          logit_bias=((EOS, -1e9), (10, 4.0), (11, 4.0), (12, 4.0)))
  no_bigram = sampler.generate(prompts, config.replace(no_repeat_ngram_size=2),
                               jax.random.key(7))
  free = sampler.generate(prompts, config, jax.random.key(7))
  repeats = 0
  for i, prompt in enumerate(prompts):
    for s in range(3):
      row = prompt + _row(no_bigram, i, s)
      # The prompt may repeat itself; no bigram that ends in the continuation repeats.
      grams = [tuple(row[j:j + 2]) for j in range(len(row) - 1)]
      for j in range(len(prompt) - 1, len(grams)):
        assert grams[j] not in grams[:j], (prompt, row)
      plain = prompt + _row(free, i, s)
      repeats += len(plain) - 1 - len(set(zip(plain, plain[1:])))
  assert repeats >= 5  # without the ban, rows do repeat bigrams
  distinct = sampler.generate(prompts, config.replace(presence_penalty=1e4), jax.random.key(8))
  for i in range(len(prompts)):
    for s in range(3):
      row = _row(distinct, i, s)
      assert len(row) == 24 and len(set(row)) == 24


def _words_model(tmp_path, texts: int, pieces: int, vocab_size: int, seed: int):
  """A sentencepiece vocabulary of `pieces` on words_corpus(texts) and a random one-layer
  model with `vocab_size` rows: (vocab, model, params)."""
  from align_jax.data.vocab import train_sentencepiece
  from hf_fixtures import words_corpus
  vocab = train_sentencepiece(words_corpus(texts), str(tmp_path / "sp"), pieces)
  config = TransformerConfig(vocab_size=vocab_size, num_layers=1, d_model=32, num_heads=2,
                             num_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=64,
                             eos_id=1, pad_id=0)
  model = Transformer(config)
  return vocab, model, init_params(model, jax.random.key(seed))


def test_stop_strings_cut_text_and_tokens_exactly(tmp_path):
  vocab, model, params = _words_model(tmp_path, 400, 310, 310, seed=3)
  sampler = Sampler(model, params, vocab=vocab, batch_size=4, length_buckets=(16,))
  prompts = ["the cat sat", "a big red dog", "hello world", "under the tree"]
  plain = sampler.generate(prompts, SamplingConfig(max_new_tokens=24, temperature=1.0,
                                                   logit_bias=((1, -1e9),)), jax.random.key(4))
  stopped = sampler.generate(prompts, SamplingConfig(max_new_tokens=24, temperature=1.0,
                                                     logit_bias=((1, -1e9),), stop_strings=("a",)),
                             jax.random.key(4))
  cut_rows = 0
  for i in range(len(prompts)):
    full_text = plain.texts[i][0]
    text = stopped.texts[i][0]
    assert "a" not in text
    if "a" in full_text:
      cut_rows += 1
      assert full_text.startswith(text) and full_text[len(text)] == "a"
      n = stopped.lengths[i, 0]
      assert "a" in vocab.decode(stopped.tokens[i, 0, :n].tolist())
      assert "a" not in vocab.decode(stopped.tokens[i, 0, :n - 1].tolist())
      np.testing.assert_array_equal(stopped.tokens[i, 0, :n], plain.tokens[i, 0, :n])
      assert (stopped.tokens[i, 0, n:] == 0).all() and stopped.finished[i, 0]
    else:
      assert text == full_text and not stopped.finished[i, 0]
  assert cut_rows >= 2


@pytest.mark.parametrize("penalties", [
    {},
    {"repetition_penalty": 1.5},
    {"no_repeat_ngram_size": 2},
    {"repetition_penalty": 0.7, "no_repeat_ngram_size": 3},
])
def test_greedy_matches_transformers_generate(tmp_path, penalties):
  from hf_fixtures import random_llama
  reference = random_llama(128, 128, bos_token_id=1, eos_token_id=2)
  with torch.no_grad():
    for p in reference.parameters():
      p.mul_(4.0)  # sharper logits: fewer near-ties between the two implementations
  reference.save_pretrained(tmp_path)
  config, params = load_checkpoint(str(tmp_path))
  sampler = Sampler(Transformer(config), params, batch_size=4, length_buckets=(16,))
  prompts = [[1, 17, 33, 9], [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [1], [1, 99, 98]]
  ours = sampler.generate(prompts, SamplingConfig(max_new_tokens=20, temperature=0,
                                                  **penalties), jax.random.key(0))
  for i, prompt in enumerate(prompts):
    with torch.no_grad():
      out = reference.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20,
                               eos_token_id=2, pad_token_id=0, **penalties)
    assert _row(ours, i) == out[0, len(prompt):].tolist()


_WORKER = textwrap.dedent("""
    import json
    import jax, numpy as np
    from align_jax.models import Transformer, TransformerConfig, init_params
    from align_jax.parallel import create_mesh
    from align_jax.sampling import Sampler, SamplingConfig

    config = TransformerConfig(vocab_size=96, num_layers=2, d_model=32, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=64, eos_id=1)
    model = Transformer(config)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [3], [20, 21, 22, 23, 24, 25], [4, 4], [9]]
    out = {}
    for name, mesh in (("one", create_mesh((1, 1, 1), devices=jax.devices()[:1])),
                       ("eight", create_mesh((2, 2, 2)))):
      params = init_params(model, jax.random.key(0), mesh)
      sampler = Sampler(model, params, mesh=mesh, batch_size=8, length_buckets=(8,))
      result = sampler.generate(prompts, SamplingConfig(max_new_tokens=10, temperature=0.9,
                                                        num_samples=2), jax.random.key(1))
      scores = sampler.score(prompts, [[1, 2, 3]] * len(prompts))
      penalized = sampler.generate(prompts, SamplingConfig(
          max_new_tokens=10, temperature=0.9, num_samples=2, repetition_penalty=1.3,
          frequency_penalty=0.2, no_repeat_ngram_size=2), jax.random.key(1))
      out[name] = {"tokens": result.tokens.tolist(), "logprobs": result.logprobs.tolist(),
                   "penalized": penalized.tokens.tolist(),
                   "scores": [s.tolist() for s in scores],
                   "param_spec": str(params["layers_0"]["mlp"]["up_kernel"].sharding.spec)}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_eight_devices_equal_one_device():
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  out = json.loads(line[len("RESULT "):])
  assert out["eight"]["param_spec"] == "P('fsdp', 'tensor')"
  assert out["one"]["tokens"] == out["eight"]["tokens"]
  assert out["one"]["penalized"] == out["eight"]["penalized"]
  assert out["one"]["penalized"] != out["one"]["tokens"]
  np.testing.assert_allclose(out["one"]["logprobs"], out["eight"]["logprobs"], atol=1e-5)
  for a, b in zip(out["one"]["scores"], out["eight"]["scores"]):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_padded_model_never_samples_past_its_vocabulary(tmp_path):
  vocab, model, params = _words_model(tmp_path, 300, 300, 320, seed=5)
  # The padding rows made the likeliest tokens by far.
  bias = tuple((i, 30.0) for i in range(300, 320))
  prompts = [[2, 10, 11], [2, 12]]
  for temperature in (0.0, 1.0):
    sampling = SamplingConfig(max_new_tokens=8, temperature=temperature, logit_bias=bias)
    bare = Sampler(model, params, batch_size=2, length_buckets=(16,))
    assert (bare.generate(prompts, sampling, jax.random.key(6)).tokens >= 300).all()
    masked = Sampler(model, params, vocab=vocab, batch_size=2, length_buckets=(16,))
    result = masked.generate(prompts, sampling, jax.random.key(6))
    assert (result.lengths == 8).all() and (result.tokens < 300).all()
