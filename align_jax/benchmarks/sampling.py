"""Decode throughput of the sampler vs transformers `generate` and a no-cache baseline.

Same weights on both sides (a random Llama built by transformers, imported), greedy
decoding of `new_tokens` tokens for `batch` prompts of `prompt` tokens, EOS banned so
every row runs the full length; `--repetition_penalty` / `--no_repeat_ngram_size` put
the same penalties on both sides (align_jax applies them inside its compiled loop). Repeats are interleaved (align_jax, transformers,
align_jax, ...). The no-cache baseline recomputes a full forward per new token; its
throughput is measured at the average sequence length (prompt + new_tokens / 2).

  python -m align_jax.benchmarks.sampling [--d_model 512 --layers 8 --vocab 32000 ...]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.benchmarks.common import llama_twin, machine, peak_rss_mb, summary, timed
from align_jax.models import Transformer
from align_jax.parallel.host import retain_freed_host_memory
from align_jax.sampling import Sampler, SamplingConfig


def main(argv=None) -> dict:
  """Runs the comparison the flags describe; prints the report as one JSON line and
  returns it."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--kv_heads", type=int, default=8)
  parser.add_argument("--mlp_dim", type=int, default=1376)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--baseline_steps", type=int, default=4)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--skip_transformers", action="store_true")
  parser.add_argument("--repetition_penalty", type=float, default=1.0,
                      help="on both sides (transformers' semantics)")
  parser.add_argument("--no_repeat_ngram_size", type=int, default=0,
                      help="on both sides (transformers' semantics)")
  args = parser.parse_args(argv)
  retained = retain_freed_host_memory()  # as align_jax.main does

  import torch
  torch.set_num_threads(max(1, torch.get_num_threads()))
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_model, config, params = llama_twin(args.d_model, args.layers, args.vocab, args.mlp_dim,
                                        args.heads, args.kv_heads,
                                        args.prompt + args.new_tokens + 16, dtype=args.dtype)
  if args.dtype == "bfloat16":
    hf_model = hf_model.to(torch.bfloat16)
  hf_model = hf_model.to(torch_device)
  rng = np.random.RandomState(0)
  prompts = rng.randint(3, args.vocab, (args.batch, args.prompt)).astype(np.int32)
  penalties = {"repetition_penalty": args.repetition_penalty,
               "no_repeat_ngram_size": args.no_repeat_ngram_size}
  sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0,
                            logit_bias=((2, -1e9),), **penalties)
  sampler = Sampler(Transformer(config), params, batch_size=args.batch,
                    length_buckets=(args.prompt,))
  key = jax.random.key(0)
  new_tokens = args.batch * args.new_tokens

  compile_and_run, first = timed(lambda: sampler.generate(prompts.tolist(), sampling, key))
  assert first.lengths.min() == args.new_tokens

  def run_hf():
    with torch.no_grad():
      out = hf_model.generate(torch.tensor(prompts, device=torch_device),
                              attention_mask=torch.ones(prompts.shape, dtype=torch.long,
                                                        device=torch_device),
                              do_sample=False, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, pad_token_id=0, eos_token_id=2,
                              **penalties)
    if torch_device == "cuda":
      torch.cuda.synchronize()
    return out

  ours, theirs = [], []
  agreement = None
  for _ in range(args.repeats):
    seconds, result = timed(lambda: sampler.generate(prompts.tolist(), sampling, key))
    ours.append(seconds)
    if not args.skip_transformers:
      start = time.perf_counter()
      out = run_hf()
      theirs.append(time.perf_counter() - start)
      reference = out[:, args.prompt:].cpu().numpy()
      agreement = float((reference == result.tokens[:, 0]).mean())

  # No-cache baseline: one full forward per generated token, at the average length.
  model = Transformer(config)
  forward = jax.jit(lambda p, t: jnp.argmax(model.apply({"params": p}, t)[:, -1], -1))
  mid = args.prompt + args.new_tokens // 2
  tokens = jnp.asarray(rng.randint(3, args.vocab, (args.batch, mid)), jnp.int32)
  timed(lambda: forward(params, tokens))
  steps = [timed(lambda: forward(params, tokens))[0] for _ in range(args.baseline_steps)]
  baseline_tps = args.batch / float(np.median(steps))

  ours_tps = new_tokens / float(np.median(ours))
  report = {
      "benchmark": "sampling",
      "config": vars(args) | {"params": config.num_params},
      "machine": machine(),
      "host_memory_retained": retained,
      "align_jax": summary(ours) | {"tokens_per_s": ours_tps},
      "compile_s": compile_and_run - float(np.median(ours)),
      "no_cache_baseline": {"tokens_per_s": baseline_tps, "seconds_per_token_step":
                            float(np.median(steps)), "at_length": mid},
      "speedup_vs_no_cache": ours_tps / baseline_tps,
      "kv_cache_mb": 2 * config.num_layers * args.batch * (args.prompt + args.new_tokens)
                     * config.num_kv_heads * config.head_dim * (4 if args.dtype == "float32"
                                                                else 2) / 2**20,
      "peak_rss_mb": peak_rss_mb(),
  }
  if theirs:
    theirs_tps = new_tokens / float(np.median(theirs))
    report["transformers"] = summary(theirs) | {"tokens_per_s": theirs_tps,
                                                "device": torch_device}
    report["speedup_vs_transformers"] = ours_tps / theirs_tps
    report["greedy_token_agreement_with_transformers"] = agreement
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
