"""DPO's loss and gradient: the chunked output head against logits held whole.

align_jax's DPO (`align_jax.training.dpo_loss_sums`) sums each response's token
log-probabilities through `output_token_logprobs`, a chunk of tokens at a time, so the
[batch, length, vocab] logits never exist at once. The peer, in the same run, is the usual
formulation (the model's logits, then log-softmax picked at the targets), with the same
weights and batch. Reported: XLA's compiled temporary memory of the jitted loss-and-gradient
of each (the buffers a step needs besides its arguments and outputs), their ratio, the
median step time of each and its ratio, and the largest difference between their losses
and gradients.

  python -m align_jax.benchmarks.dpo [--vocab 32000 --batch 8 --seq 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.benchmarks.common import (machine, max_abs_diff, measure_value_and_grad,
                                         small_config)
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.training.dpo import REFERENCE_KEY, dpo_loss_sums, split_reference
from align_jax.training.losses import token_nll


def _materialised_logprobs(model, params, batch, prefix):
  logits = model.apply({"params": params}, batch[prefix + "input_tokens"],
                       batch[prefix + "positions"], batch[prefix + "segment_ids"])
  nll = token_nll(logits, batch[prefix + "target_tokens"])
  return -(nll * batch[prefix + "loss_weights"]).sum(-1)


def materialised_dpo_loss(model, params, batch, beta: float = 0.1):
  """The summed DPO loss with every row's logits held whole (the peer)."""
  policy, reference = split_reference(params)
  reference = jax.lax.stop_gradient(reference)
  margin = 0.0
  for side, sign in (("chosen_", 1.0), ("rejected_", -1.0)):
    margin = margin + sign * beta * (_materialised_logprobs(model, policy, batch, side)
                                     - _materialised_logprobs(model, reference, batch, side))
  return -jax.nn.log_sigmoid(margin).sum()


def _batch(config: TransformerConfig, rows: int, length: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  out = {}
  for side in ("chosen_", "rejected_"):
    tokens = rng.integers(3, config.vocab_size, (rows, length + 1)).astype(np.int32)
    weights = np.ones((rows, length), np.float32)
    weights[:, :length // 4] = 0   # the prompt
    out.update({side + "input_tokens": tokens[:, :-1], side + "target_tokens": tokens[:, 1:],
                side + "loss_weights": weights,
                side + "segment_ids": np.ones((rows, length), np.int32),
                side + "positions": np.broadcast_to(np.arange(length),
                                                    (rows, length)).astype(np.int32)})
  return {k: jnp.asarray(v) for k, v in out.items()}


def _measure(loss, params, reference, batch, repeats: int) -> dict:
  out = measure_value_and_grad(lambda p: loss({**p, REFERENCE_KEY: reference}, batch), params,
                               repeats)
  loss_value = float(out.pop("value"))
  return {**out, "loss": loss_value}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--batch", type=int, default=8, help="preference pairs")
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  config = small_config(args.vocab, args.d_model, args.layers, args.seq, tie_embeddings=False)
  model = Transformer(config)
  params = init_params(model, jax.random.key(0))
  reference = init_params(model, jax.random.key(1))
  batch = _batch(config, args.batch, args.seq)
  chunked = _measure(lambda p, b: dpo_loss_sums(model, p, b)[0], params, reference, batch,
                     args.repeats)
  whole = _measure(lambda p, b: materialised_dpo_loss(model, p, b), params, reference, batch,
                   args.repeats)
  grad_diff = max_abs_diff(chunked.pop("grads"), whole.pop("grads"))
  logits_bytes = 4 * args.batch * args.seq * args.vocab
  report = {
      "benchmark": "dpo", **machine(),
      "config": {"vocab": args.vocab, "d_model": args.d_model, "layers": args.layers,
                 "pairs": args.batch, "seq": args.seq},
      "one_side_logits_bytes": logits_bytes,
      "align_jax_chunked": chunked, "materialised_logits": whole,
      "temp_memory_ratio": (chunked["temp_bytes"] / whole["temp_bytes"]
                            if chunked["temp_bytes"] and whole["temp_bytes"] else None),
      "time_ratio": chunked["median_s"] / whole["median_s"],
      "loss_abs_diff": abs(chunked["loss"] - whole["loss"]),
      "grad_max_abs_diff": grad_diff}
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
