"""Sampling many paths per prompt: shared prefill vs every row prefilling its own copy.

Self-consistency, recitation and best-of-n draw `samples` continuations of each prompt.
The sampler prefills each distinct prompt of a batch once and copies its KV cache to
the rows of its samples; the peer is the same sampler with `share_prefill=False`
(each row prefills its own copy of the prompt). Same weights, prompts, keys and
settings; the rows must come out identical. Repeats are interleaved.

  python -m align_jax.benchmarks.shared_prefill [--prompts 16 --samples 20 --prompt 192 ...]
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from align_jax.benchmarks.common import machine, summary, timed
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.sampling import Sampler, SamplingConfig


def main(argv=None) -> dict:
  """Runs the comparison the flags describe; prints the report as one JSON line and
  returns it."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--samples", type=int, default=20)
  parser.add_argument("--prompt", type=int, default=192)
  parser.add_argument("--new_tokens", type=int, default=16)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  config = TransformerConfig(vocab_size=args.vocab, num_layers=args.layers,
                             d_model=args.d_model, num_heads=4, num_kv_heads=2,
                             head_dim=args.d_model // 4, mlp_dim=3 * args.d_model,
                             max_seq_len=args.prompt + args.new_tokens, eos_id=1, pad_id=0)
  model = Transformer(config)
  params = init_params(model, jax.random.key(0))
  rng = np.random.RandomState(0)
  prompts = rng.randint(3, args.vocab, (args.prompts, args.prompt)).tolist()
  sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.7,
                            num_samples=args.samples, logit_bias=((1, -1e9),))
  key = jax.random.key(1)
  samplers = {name: Sampler(model, params, batch_size=args.batch,
                            length_buckets=(args.prompt,), share_prefill=share)
              for name, share in (("shared", True), ("per_row", False))}
  outputs = {name: s.generate(prompts, sampling, key) for name, s in samplers.items()}  # compile
  same = bool(np.array_equal(outputs["shared"].tokens, outputs["per_row"].tokens))
  seconds: dict[str, list[float]] = {name: [] for name in samplers}
  for _ in range(args.repeats):
    for name, s in samplers.items():
      seconds[name].append(timed(lambda: s.generate(prompts, sampling, key).tokens)[0])
  report = {
      "benchmark": "shared_prefill",
      "setting": {k: v for k, v in vars(args).items()},
      "rows": args.prompts * args.samples,
      "prefill_rows_per_batch": {"shared": samplers["shared"].prefill_rows(args.samples),
                                 "per_row": args.batch},
      "identical_rows": same,
      "shared": summary(seconds["shared"]),
      "per_row": summary(seconds["per_row"]),
      "speedup": summary(seconds["per_row"])["median_s"] / summary(seconds["shared"])["median_s"],
      "machine": machine(),
  }
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
