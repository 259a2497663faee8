"""Reward-model training on pairs of varied lengths: batches cut after their longest row
(`DataConfig.pad_to_multiple_of`) against every row padded to seq_len.

Preference pairs whose answers' lengths are drawn from a long-tailed (log-normal)
distribution, as in public preference data (most pairs short, a few near the limit), are
batched by `align_jax.data.BatchIterator` twice, the same examples in the same order:
padded to seq_len (the peer: how fixed-shape trainers batch them), and cut after each
batch's longest row to a multiple of `--multiple`. Each runs the reward model's gradient
step (jitted value-and-grad of the Bradley-Terry loss) over every batch twice: the first
pass with its compilations (one per distinct length), the second all compiled. Reported:
both passes' times and their ratios (cut / padded), the positions each computed on
(padding included) against the real tokens, the distinct lengths compiled, and the
largest difference between the two's losses.

  python -m align_jax.benchmarks.batch_length [--seq 512 --median 96 --pairs 8
                                               --batches 12 --multiple 64]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.benchmarks.common import machine, small_config
from align_jax.data.pipeline import BatchIterator
from align_jax.models import TransformerWithHead, init_params
from align_jax.training import pairwise_loss_sums


def preference_examples(rng: np.random.Generator, count: int, seq: int, median: int,
                        vocab: int) -> list[dict[str, np.ndarray]]:
  """`count` tokenized pairs: a prompt of 4-16 tokens, then two answers whose total
  lengths are log-normal around `median` (sigma 0.6), at most `seq` + 1 tokens."""
  out = []
  for _ in range(count):
    prompt = int(rng.integers(4, 17))
    sides = {}
    for side in ("chosen", "rejected"):
      length = int(np.clip(rng.lognormal(np.log(median), 0.6), prompt + 2, seq + 1))
      sides[f"{side}_tokens"] = rng.integers(3, vocab, length).astype(np.int32)
      sides[f"{side}_loss_mask"] = (np.arange(length) >= prompt).astype(np.int32)
    out.append(sides)
  return out


def _passes(step, params, batches: list[dict[str, np.ndarray]]) -> dict:
  """Two timed passes of `step` over `batches` (the first compiles), their losses and
  the positions computed on."""
  times, losses = [], []
  for _ in range(2):
    start = time.perf_counter()
    losses = [float(jax.block_until_ready(step(params, {k: jnp.asarray(v) for k, v in
                                                        b.items()}))[0]) for b in batches]
    times.append(time.perf_counter() - start)
  return {"first_pass_s": times[0], "compiled_pass_s": times[1],
          "lengths": sorted({int(b["chosen_input_tokens"].shape[1]) for b in batches}),
          "positions": int(sum(2 * b["chosen_input_tokens"].size for b in batches)),
          "losses": losses}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--median", type=int, default=96, help="median tokens of an answer")
  parser.add_argument("--pairs", type=int, default=8, help="pairs a batch")
  parser.add_argument("--batches", type=int, default=12)
  parser.add_argument("--multiple", type=int, default=64)
  args = parser.parse_args(argv)
  config = small_config(args.vocab, args.d_model, args.layers, args.seq)
  model = TransformerWithHead(config)
  params = init_params(model, jax.random.key(0))
  examples = preference_examples(np.random.default_rng(0), args.pairs * args.batches,
                                 args.seq, args.median, args.vocab)

  def batches(multiple):
    it = BatchIterator(examples, kind="preference", batch_size=args.pairs, seq_len=args.seq,
                       shuffle=False, num_epochs=1, pad_to_multiple_of=multiple)
    return list(it)

  @jax.jit
  def step(p, batch):
    def loss(q):
      total, weight, _ = pairwise_loss_sums(model, q, batch)
      return total / weight
    return jax.value_and_grad(loss)(p)

  padded_batches, cut_batches = batches(None), batches(args.multiple)
  real = int(sum((b[k] > 0).sum() for b in padded_batches
                 for k in ("chosen_segment_ids", "rejected_segment_ids")))
  padded = _passes(step, params, padded_batches)
  cut = _passes(step, params, cut_batches)
  loss_diff = max(abs(a - b) for a, b in zip(padded.pop("losses"), cut.pop("losses")))
  report = {
      "benchmark": "batch_length", **machine(),
      "config": {"vocab": args.vocab, "d_model": args.d_model, "layers": args.layers,
                 "seq": args.seq, "median": args.median, "pairs": args.pairs,
                 "batches": args.batches, "multiple": args.multiple},
      "real_tokens": real,
      "padded_to_seq_len": padded, "align_jax_cut": cut,
      "positions_ratio": cut["positions"] / padded["positions"],
      "compiled_time_ratio": cut["compiled_pass_s"] / padded["compiled_pass_s"],
      "first_pass_time_ratio": cut["first_pass_s"] / padded["first_pass_s"],
      "loss_max_abs_diff": loss_diff}
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
