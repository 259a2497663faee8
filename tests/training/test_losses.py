"""The fused output head + cross-entropy, and the chunked per-token log-probabilities,
against plain logits + log-softmax."""

import json
import os
import subprocess
import sys
import textwrap

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


@pytest.mark.parametrize("chunk", [3, 8, 20, 4096])
def test_a_batch_in_chunks_along_its_length_equals_each_row_alone(chunk):
  # [B, L, d]: chunks of chunk // B positions with every row in each (3: one position).
  keys = jax.random.split(jax.random.key(3), 4)
  rows, length, d, vocab = 3, 13, 16, 50
  hidden = jax.random.normal(keys[0], (rows, length, d))
  w_out = jax.random.normal(keys[1], (d, vocab)) * 0.3
  targets = jax.random.randint(keys[2], (rows, length), 0, vocab)
  weights = (jax.random.uniform(keys[3], (rows, length)) > 0.3).astype(jnp.float32)
  got = output_token_logprobs(hidden, w_out, targets, chunk)
  assert got.shape == (rows, length)
  for r in range(rows):
    np.testing.assert_allclose(got[r], output_token_logprobs(hidden[r], w_out, targets[r], 4096),
                               atol=1e-6)
  scale = jax.random.normal(keys[3], (rows, length))

  def plain(h, w):
    picked = jnp.take_along_axis(jax.nn.log_softmax(h @ w), targets[..., None], -1)[..., 0]
    return jnp.sum(jnp.tanh(picked) * scale)

  chunked = jax.grad(lambda h, w: jnp.sum(jnp.tanh(output_token_logprobs(h, w, targets, chunk))
                                          * scale), argnums=(0, 1))(hidden, w_out)
  for a, b in zip(chunked, jax.grad(plain, argnums=(0, 1))(hidden, w_out)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)
  nll, correct = output_nll_sums(hidden, w_out, targets, weights, chunk)
  flat = output_nll_sums(hidden.reshape(-1, d), w_out, targets.reshape(-1),
                         weights.reshape(-1), 4096)
  np.testing.assert_allclose(nll, flat[0], rtol=1e-5)
  assert float(correct) == float(flat[1])
  grads = jax.grad(lambda h, w: output_nll_sums(h, w, targets, weights, chunk)[0],
                   argnums=(0, 1))(hidden, w_out)
  want = jax.grad(lambda h, w: _reference(h.reshape(-1, d), w, targets.reshape(-1),
                                          weights.reshape(-1)), argnums=(0, 1))(hidden, w_out)
  for a, b in zip(grads, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)


_DATA_PARALLEL = textwrap.dedent("""
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from align_jax.models import Transformer, TransformerConfig, init_params, param_shardings
    from align_jax.parallel import DEFAULT_RULES, create_mesh, sharding_context
    from align_jax.ppo.rollouts import response_logprobs
    from align_jax.training.dpo import response_logprobs as dpo_logprobs
    from align_jax.training.losses import lm_loss_sums

    config = TransformerConfig(vocab_size=32768, num_layers=1, d_model=32, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=256,
                               tie_embeddings=False)
    model = Transformer(config)
    rows, length = 8, 256   # 2,048 rows: four chunks of the head's 512 on CPU
    tokens = np.random.default_rng(0).integers(3, 32768, (rows, length + 1)).astype(np.int32)
    batch = {"input_tokens": tokens[:, :-1], "target_tokens": tokens[:, 1:],
             "tokens": tokens[:, :-1],
             "positions": np.broadcast_to(np.arange(length), (rows, length)).astype(np.int32),
             "segment_ids": np.ones((rows, length), np.int32),
             "loss_weights": np.ones((rows, length), np.float32)}
    losses = {
        "lm": lambda p, b: lm_loss_sums(model, p, b)[0],
        "dpo": lambda p, b: dpo_logprobs(model, p, b, "").sum(),
        "ppo": lambda p, b: sum(x.sum() for x in response_logprobs(model, p, b, 64)),
    }

    def compiled(mesh, loss):
      params = init_params(model, jax.random.key(0), mesh, DEFAULT_RULES)
      with sharding_context(mesh, DEFAULT_RULES):
        b = {k: jax.device_put(v, NamedSharding(mesh, P(("data", "fsdp"))))
             for k, v in batch.items()}
        step = jax.jit(jax.grad(loss), in_shardings=(
            param_shardings(model, mesh, DEFAULT_RULES), {k: v.sharding for k, v in b.items()}))
        c = step.lower(params, b).compile()
        return c, jax.tree.map(np.asarray, c(params, b))

    def flops(c):
      cost = c.cost_analysis()
      return (cost[0] if isinstance(cost, list) else cost)["flops"]

    def reduces_in_loops(text):
      # the shapes all-reduced inside while-loop bodies
      bodies = set(re.findall(r"body=%?([\\w.\\-]+)", text))
      shapes, current = [], None
      for line in text.split("\\n"):
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
          current = line.split(" ")[1 if line.startswith("ENTRY") else 0].lstrip("%")
        if current in bodies and "all-reduce(" in line:
          shapes.append(re.search(r"=\\s*\\(?(\\w+\\[[^\\]]*\\])", line).group(1))
      return shapes

    out = {}
    for name, loss in losses.items():
      one, grads_one = compiled(create_mesh((1, 1, 1), devices=jax.devices()[:1]), loss)
      # PPO's head is DPO's (chunked_head): the vocabulary split for the LM loss and DPO.
      for mesh_name, shape in (("data", (4, 1, 1)), ("tensor", (1, 1, 4)))[:1 + (name != "ppo")]:
        four, grads_four = compiled(create_mesh(shape), loss)
        gap = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
                  for a, b in zip(jax.tree.leaves(grads_four), jax.tree.leaves(grads_one)))
        text = four.as_text()
        gathered = [g for g in re.findall(r"all-gather[^\\n]*", text)
                    if re.search(r"f32\\[[^\\]]*,32\\]", g)]
        out[f"{name}/{mesh_name}"] = {
            "ratio": flops(four) / flops(one), "hidden_gathers": len(gathered),
            "loops": len(re.findall(r" while\\(", text)),
            "reduces_in_loops": reduces_in_loops(text), "grad_gap": gap}
    print("RESULT " + json.dumps(out))
""")


def test_the_chunked_heads_stay_data_parallel_on_a_four_device_mesh():
  # The losses of a batch split over 4 devices: each device computes its own rows' head
  # (a quarter of the one-device FLOPs), no hidden states are gathered, and the head's
  # weight gradient is summed over devices once, after the chunk loop, not once a chunk.
  # Chunks of flattened rows cost every device the whole batch's head (0.94x) behind an
  # all-gather; a replicated weight in the loop was all-reduced in every chunk. The
  # gradients equal one device's, and so with the vocabulary split over 4 devices.
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _DATA_PARALLEL], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert len(result) == 5
  for name, got in result.items():
    assert got["ratio"] < 0.3, (name, got)
    assert got["hidden_gathers"] == 0, (name, got)
    assert got["loops"] >= 1, (name, got)
    assert got["grad_gap"] < 1e-5, (name, got)   # the same gradients as on one device
    if name.endswith("/data"):
      assert got["reduces_in_loops"] == [], (name, got)
    else:   # vocabulary split over 4 devices: the softmax's row sums and the hidden
      # states' gradient are summed in each chunk, never the weight's [d, V] gradient
      assert all("32768" not in shape for shape in got["reduces_in_loops"]), (name, got)
