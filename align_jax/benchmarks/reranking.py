"""Easy-to-Hard reranking: sampling N solutions per problem vs scoring them with a PRM.

    python -m align_jax.benchmarks.reranking [--problems 16 --samples 16 --d_model 128 ...]

Reranking draws `samples` solutions for each of `problems` held-out questions of the
leveled math world (`align_jax.worlds.leveled_math`) with the shared sampler, then a
process reward model (PRM) scores every step of every solution
(`ProcessRewardModel.score`: each solution rendered in the step format, one forward
pass, the per-token scores read at each step's end). Both models are random (a
`Transformer` policy and a `TransformerWithHead` PRM of the same config) with a
vocabulary trained on the world's texts: time and agreement do not depend on training.
Random policies rarely emit EOS, so most solutions run to `new_tokens`; they are kept
from pieces a trained policy would not write (byte fallbacks, unknown, BOS, pad: their
decoded text re-encodes to several times as many tokens), so the rendered solutions
have about as many tokens as were generated.

Reported: (1) the seconds of generation and of PRM scoring (rendering included) and
the share of the reranking time each takes; (2) the PRM's scoring throughput from the
rendered token sequences to the step logits against transformers doing the same
work with the same weights (exported by `align_jax.hf.save_checkpoint` as a
`LlamaForSequenceClassification`: backbone hidden states times its `score` layer at
every position, plus the head bias of `score_bias.json`; batches of the same size,
right-padded, with an attention mask), and the largest difference of their step
logits. Warm-up calls (compilation) come first and are not timed; repeats are
interleaved (generation, PRM, align_jax scoring, transformers scoring, ...). Both
frameworks use the same host's cores; on a shared machine read the ratios, not the
seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

import jax
import numpy as np

from align_jax.benchmarks.common import machine, peak_rss_mb, summary, timed
from align_jax.data.vocab import train_sentencepiece
from align_jax.models import Transformer, TransformerConfig, TransformerWithHead, init_params
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.pipeline.generation import prompt_renderer
from align_jax.rewards import ProcessRewardModel
from align_jax.sampling import Sampler, SamplingConfig
from align_jax.training.runs import LoadedRun
from align_jax.worlds.leveled_math import LeveledMathConfig, build_world

CHAT_TEMPLATE = "plain"  # the Easy-to-Hard pipeline's default


def _torch_and_transformers():
  try:
    import torch
    import transformers
  except ImportError as error:  # test-only dependencies
    raise ImportError("the reranking benchmark compares against transformers: it needs torch "
                      "and transformers (pip install -e '.[test]')") from error
  return torch, transformers


def world_vocabulary(texts, prefix: str, vocab_size: int):
  """The Easy-to-Hard world's kind of vocabulary: BPE, digits split, newlines kept as a
  piece of their own, no dummy prefix (a step tokenized alone keeps its tokens)."""
  return train_sentencepiece(texts, prefix, vocab_size, model_type="bpe", extra_options={
      "split_digits": True, "normalization_rule_name": "identity",
      "remove_extra_whitespaces": False, "add_dummy_prefix": False,
      "user_defined_symbols": "\n", "hard_vocab_limit": False})


def off_alphabet_ids(vocab) -> list[int]:
  """Pieces a trained policy of the world never writes: pad, BOS, unknown and the byte
  fallbacks (a lone byte decodes to U+FFFD, whose re-encoding takes three tokens)."""
  sp = vocab.tokenizer
  return [i for i in range(sp.get_piece_size())
          if sp.is_byte(i) or sp.is_unknown(i) or i in (vocab.pad_id, vocab.bos_id)]


def transformers_step_logits(model, bias: float, sequences, positions, batch_size: int,
                             device: str) -> list[np.ndarray]:
  """Per-token scores of a transformers sequence classifier (its backbone's last hidden
  states times its `score` layer, at every position, plus the exported head bias),
  read at each sequence's step positions; batches right-padded with a mask."""
  import torch
  out = []
  with torch.inference_mode():
    for start in range(0, len(sequences), batch_size):
      chunk = sequences[start:start + batch_size]
      length = max(len(x) for x in chunk)
      ids = np.zeros((len(chunk), length), np.int64)
      mask = np.zeros((len(chunk), length), np.int64)
      for i, x in enumerate(chunk):
        ids[i, :len(x)], mask[i, :len(x)] = x, 1
      hidden = model.model(input_ids=torch.from_numpy(ids).to(device),
                           attention_mask=torch.from_numpy(mask).to(device)).last_hidden_state
      scores = (model.score(hidden)[..., 0] + bias).float().cpu().numpy()
      out += [scores[i, positions[start + i]] for i in range(len(chunk))]
  return out


def main(argv=None) -> dict:
  """Runs the comparison the flags describe; prints the report as one JSON line and
  returns it."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--problems", type=int, default=16)
  parser.add_argument("--samples", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=96)
  parser.add_argument("--temperature", type=float, default=0.7)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--layers", type=int, default=3)
  parser.add_argument("--max_seq_len", type=int, default=160)
  parser.add_argument("--vocab", type=int, default=384)
  parser.add_argument("--batch", type=int, default=64, help="rows per sampler / PRM batch")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tolerance", type=float, default=1e-3,
                      help="largest score difference allowed between the frameworks")
  args = parser.parse_args(argv)
  if min(args.problems, args.samples, args.repeats) < 1:
    parser.error("--problems, --samples and --repeats must be at least 1")
  torch, transformers = _torch_and_transformers()
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  from align_jax.hf import save_checkpoint

  levels = LeveledMathConfig().num_levels
  world = build_world(LeveledMathConfig(num_eval=math.ceil(args.problems / levels)))
  records = world.records("eval")[:args.problems]
  config = TransformerConfig(vocab_size=args.vocab, num_layers=args.layers, d_model=args.d_model,
                             num_heads=4, num_kv_heads=2, head_dim=args.d_model // 4,
                             mlp_dim=3 * args.d_model, max_seq_len=args.max_seq_len,
                             pad_id=0, eos_id=1, bos_id=2)
  mesh = create_mesh()
  policy, prm_module = Transformer(config), TransformerWithHead(config)
  policy_params = init_params(policy, jax.random.key(0), mesh)
  prm_params = init_params(prm_module, jax.random.key(1), mesh)

  with tempfile.TemporaryDirectory() as directory:
    vocab = world_vocabulary(world.texts(), f"{directory}/spm", args.vocab)
    if vocab.vocab_size > config.vocab_size:
      raise ValueError(f"the vocabulary has {vocab.vocab_size} pieces, more than --vocab")
    save_checkpoint(f"{directory}/prm", config, prm_params)
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        f"{directory}/prm", dtype=torch.float32).eval().to(torch_device)
    with open(f"{directory}/prm/score_bias.json") as f:
      bias = float(json.load(f)["bias"])

  sampler = Sampler(policy, policy_params, vocab=vocab, mesh=mesh, batch_size=args.batch)
  make_prompt = prompt_renderer(vocab, CHAT_TEMPLATE)
  prompt_tokens = [make_prompt(r) for r in records]
  banned = off_alphabet_ids(vocab)
  sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=args.temperature,
                            num_samples=args.samples, logit_bias=tuple((i, -1e9) for i in banned))
  key = jax.random.key(2)
  run = LoadedRun("random_prm", config, prm_params, vocab, {"kind": "process"}, mesh,
                  DEFAULT_RULES, head=True)
  prm = ProcessRewardModel(run, CHAT_TEMPLATE, batch_size=args.batch)

  # Warm-up (compilation), not timed; its samples are the solutions scored below.
  compile_generation, result = timed(lambda: sampler.generate(prompt_tokens, sampling, key))
  prompts = [r["prompt"] for r in records for _ in range(args.samples)]
  solutions = [text for texts in result.texts for text in texts]
  compile_scoring, scored = timed(lambda: prm.score(prompts, solutions))
  rendered = [prm.inputs(p, s) for p, s in zip(prompts, solutions)]
  sequences = [tokens for _, tokens, _ in rendered]
  positions = [at for _, _, at in rendered]

  def ours():  # the PRM's scorer on the rendered tokens, read at the step ends
    scores = prm.scorer.token_scores(sequences)
    return [s[at] for s, at in zip(scores, positions)]

  def theirs():
    return transformers_step_logits(hf_model, bias, sequences, positions, args.batch,
                                    torch_device)

  ours_logits, theirs_logits = ours(), theirs()  # warm-up
  seconds: dict[str, list[float]] = {"generation": [], "prm_score": [], "align_jax": [],
                                     "transformers": []}
  for _ in range(args.repeats):
    seconds["generation"].append(timed(
        lambda: sampler.generate(prompt_tokens, sampling, key).tokens)[0])
    seconds["prm_score"].append(timed(lambda: prm.score(prompts, solutions))[0])
    t, ours_logits = timed(ours)
    seconds["align_jax"].append(t)
    start = time.perf_counter()
    theirs_logits = theirs()
    seconds["transformers"].append(time.perf_counter() - start)

  # Beyond the step ends: every token's score, untimed.
  every = [np.arange(len(x)) for x in sequences]
  token_diff = max(float(np.abs(a - b).max()) for a, b in zip(
      prm.scorer.token_scores(sequences),
      transformers_step_logits(hf_model, bias, sequences, every, args.batch, torch_device)))
  step_logits = int(sum(len(at) for at in positions))
  diffs = [np.abs(a - b).max() for a, b in zip(ours_logits, theirs_logits) if len(a)]
  max_diff = float(max(diffs)) if diffs else 0.0
  same_as_score = max((float(np.abs(a - s.logits).max()) for a, s in zip(ours_logits, scored)
                       if len(a)), default=0.0)
  if max(max_diff, token_diff) > args.tolerance:
    raise AssertionError(f"scores differ by {max(max_diff, token_diff):.3g} between align_jax "
                         f"and transformers (tolerance {args.tolerance}): not the same work")

  n_solutions = len(solutions)
  scored_tokens = int(sum(len(x) for x in sequences))
  generated_tokens = result.num_generated_tokens
  median = {name: summary(s)["median_s"] for name, s in seconds.items()}
  reranking = median["generation"] + median["prm_score"]

  def rates(name, tokens):
    return {"solutions_per_s": n_solutions / median[name], "tokens_per_s": tokens / median[name]}

  report = {
      "benchmark": "reranking",
      "config": vars(args) | {"vocab_size": int(vocab.vocab_size), "num_heads": 4,
                              "num_kv_heads": 2, "head_dim": config.head_dim,
                              "mlp_dim": config.mlp_dim, "params": config.num_params,
                              "banned_ids": len(banned)},
      "machine": machine(),
      "solutions": n_solutions,
      "scored_solutions": len(scored),
      "generation_s": median["generation"],
      "generation_tokens": generated_tokens,
      "generation_tokens_per_s": generated_tokens / median["generation"],
      "finished_share": float(result.finished.mean()),
      "prm_score_s": median["prm_score"],
      "prm_score": rates("prm_score", scored_tokens),
      "reranking_s": reranking,
      "generation_share": median["generation"] / reranking,
      "scoring_share": median["prm_score"] / reranking,
      "scored_tokens": scored_tokens,
      "step_logits": step_logits,
      "align_jax_scoring_s": median["align_jax"],
      "transformers_scoring_s": median["transformers"],
      "transformers_over_align_jax": median["transformers"] / median["align_jax"],
      "align_jax": rates("align_jax", scored_tokens),
      "transformers": rates("transformers", scored_tokens) | {"device": torch_device},
      "max_abs_step_logit_diff": max_diff,
      "max_abs_token_score_diff": token_diff,
      "max_abs_diff_vs_prm_score": same_as_score,
      "timings": {name: summary(s) for name, s in seconds.items()},
      "compile_s": {"generation": compile_generation - median["generation"],
                    "prm_score": compile_scoring - median["prm_score"]},
      "peak_rss_mb": peak_rss_mb(),
  }
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
