"""PPO's response log-probabilities and entropy: the chunked output head against logits
held whole.

`align_jax.ppo.rollouts.response_logprobs` (the rollout scoring pass and the PPO loss) runs
the output head a chunk of the response at a time (every row in each), rematerialised, so the
[batch, response length, vocab] logits never exist at once, forward or backward. The peer,
in the same run, is the same function with one chunk (the logits held whole, as PPO ran
before and as most RLHF trainers compute them), with the same weights and batch. Reported:
XLA's compiled temporary memory of the jitted value-and-gradient of each (of the summed
log-probabilities plus entropies), their ratio, the median step time of each and its
ratio, and the largest difference between their outputs and gradients.

  python -m align_jax.benchmarks.ppo_logprobs [--vocab 32000 --batch 16 --prompt 64
                                               --response 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.benchmarks.common import (machine, max_abs_diff, measure_value_and_grad,
                                         small_config)
from align_jax.models import Transformer, init_params
from align_jax.ppo.rollouts import response_logprobs
from align_jax.training.losses import head_chunk_rows


def _measure(model, params, batch, start: int, chunk: int, repeats: int) -> dict:
  def f(p):
    logprobs, entropy = response_logprobs(model, p, batch, start, 0.7, chunk)
    return (logprobs + entropy).sum(), (logprobs, entropy)
  out = measure_value_and_grad(f, params, repeats, has_aux=True)
  outputs = out.pop("value")[1]
  return {"chunk_rows": chunk, **out, "outputs": outputs}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--batch", type=int, default=16, help="responses")
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--response", type=int, default=256)
  parser.add_argument("--chunk", type=int, default=0,
                      help="rows a chunk (0: head_chunk_rows of the vocabulary)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  length = args.prompt + args.response
  config = small_config(args.vocab, args.d_model, args.layers, length, tie_embeddings=False)
  model = Transformer(config)
  params = init_params(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"tokens": jnp.asarray(rng.integers(3, args.vocab, (args.batch, length)), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                                         (args.batch, length)),
           "segment_ids": jnp.ones((args.batch, length), jnp.int32)}
  chunk = args.chunk or head_chunk_rows(args.vocab)
  chunked = _measure(model, params, batch, args.prompt, chunk, args.repeats)
  whole = _measure(model, params, batch, args.prompt, args.batch * args.response,
                   args.repeats)
  output_diff = max_abs_diff(chunked.pop("outputs"), whole.pop("outputs"))
  grad_diff = max_abs_diff(chunked.pop("grads"), whole.pop("grads"))
  report = {
      "benchmark": "ppo_logprobs", **machine(),
      "config": {"vocab": args.vocab, "d_model": args.d_model, "layers": args.layers,
                 "responses": args.batch, "prompt": args.prompt, "response": args.response},
      "logits_bytes": 4 * args.batch * args.response * args.vocab,
      "align_jax_chunked": chunked, "materialised_logits": whole,
      "temp_memory_ratio": (chunked["temp_bytes"] / whole["temp_bytes"]
                            if chunked["temp_bytes"] and whole["temp_bytes"] else None),
      "time_ratio": chunked["median_s"] / whole["median_s"],
      "output_max_abs_diff": output_diff, "grad_max_abs_diff": grad_diff}
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
