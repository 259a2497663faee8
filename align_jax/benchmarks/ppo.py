"""Time of one PPO iteration, split into generation, scoring and training.

    python -m align_jax.benchmarks.ppo [--iterations 3] [--configs tiny,d512,d512_inexact]
    python -m align_jax.benchmarks.ppo --configs 1b       # on a GPU or TPU

For each config, the four roles (policy, reference, value, reward model) are random
models of that size on one mesh; prompts are random texts. Each iteration is what
`train_ppo` runs: `RolloutSource` generates one response per prompt with the shared
sampler and scores it (policy and reference log-probabilities, reward model), then the
jitted PPO step recomputes old log-probabilities and values, runs GAE and the epochs
of mini-batch updates. The first iteration (compilation) is reported apart. Random
models rarely emit EOS, so every response runs to max_new_tokens: the worst case for
the generation share. Goal: generation <= 60% of the iteration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import jax
import numpy as np

from align_jax.benchmarks.common import machine, peak_rss_mb
from align_jax.data.vocab import train_sentencepiece
from align_jax.models import (Transformer, TransformerConfig, TransformerWithHead, init_params,
                              param_shardings)
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.parallel.host import retain_freed_host_memory
from align_jax.ppo import PPOConfig, RolloutSource, make_ppo_step, make_score_fn
from align_jax.rewards import CompositeReward, RewardModelTerm, policy_tokens
from align_jax.sampling import Sampler
from align_jax.training import (OptimizerConfig, init_train_state, make_optimizer,
                                state_shardings)
from align_jax.training.runs import LoadedRun

CONFIGS = {
    "tiny": (TransformerConfig(vocab_size=512, num_layers=2, d_model=64, num_heads=4,
                               num_kv_heads=2, head_dim=16, mlp_dim=192, max_seq_len=128),
             PPOConfig(rollout_batch_size=64, mini_batch_size=16, num_epochs=4,
                       max_prompt_len=32, max_new_tokens=32)),
    "d512": (TransformerConfig(vocab_size=32000, num_layers=8, d_model=512, num_heads=8,
                               num_kv_heads=8, head_dim=64, mlp_dim=1536, max_seq_len=256),
             PPOConfig(rollout_batch_size=16, mini_batch_size=8, num_epochs=2,
                       max_prompt_len=64, max_new_tokens=64)),
    # About 1B parameters per role in bfloat16 compute (fp32 master weights), for a GPU or
    # TPU: the size launch/gpu/check.sh times.
    "1b": (TransformerConfig(vocab_size=32000, num_layers=16, d_model=2048, num_heads=16,
                             num_kv_heads=16, head_dim=128, mlp_dim=5504, max_seq_len=512,
                             dtype="bfloat16"),
           PPOConfig(rollout_batch_size=64, mini_batch_size=16, num_epochs=2,
                     max_prompt_len=128, max_new_tokens=256)),
}
# The peer: the same d512 iteration without rematerialising the loss's forward pass
# (first ratio 1 +- 1e-8 instead of exactly 1): what the exactness costs.
CONFIGS["d512_inexact"] = (CONFIGS["d512"][0],
                           dataclasses.replace(CONFIGS["d512"][1], exact_ratio=False))


def bench(name: str, iterations: int, vocab) -> dict:
  """Mean generation, scoring and training times of config `name`'s PPO iterations and
  their shares, over `iterations` iterations after the first (reported apart)."""
  config, ppo = CONFIGS[name]
  mesh = create_mesh()
  policy, value = Transformer(config), TransformerWithHead(config)
  policy_params = init_params(policy, jax.random.key(0), mesh)
  reward_params = init_params(value, jax.random.key(1), mesh)
  trainable = {"policy": policy_params, "value": reward_params}
  shardings = {"policy": param_shardings(policy, mesh), "value": param_shardings(value, mesh)}
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-5, warmup_steps=0,
                                             total_steps=1000))
  state = init_train_state(trainable, optimizer, 0, shardings, mesh)
  state_sh = state_shardings(optimizer, trainable, shardings, mesh)
  step = jax.jit(make_ppo_step(policy, value, ppo, optimizer, ppo.max_prompt_len),
                 in_shardings=(state_sh, None, None), out_shardings=(state_sh, None),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  prompts = [{"prompt": "x", "prompt_ids": [config.bos_id or 2] + rng.integers(
      4, vocab.vocab_size, int(rng.integers(ppo.max_prompt_len // 2, ppo.max_prompt_len))
  ).tolist()} for _ in range(ppo.rollout_batch_size * (iterations + 1))]
  sampler = Sampler(policy, None, vocab=vocab, mesh=mesh, batch_size=ppo.rollout_batch_size,
                    length_buckets=(ppo.max_prompt_len,))
  score_fn = make_score_fn(policy, policy_params, ppo.max_prompt_len, ppo.temperature)
  reward_model = RewardModelTerm.from_loaded(
      LoadedRun("random", config, reward_params, vocab, {}, mesh, DEFAULT_RULES, head=True),
      policy_tokens(), batch_size=ppo.rollout_batch_size)
  source = RolloutSource(prompts=prompts, config=ppo, sampler=sampler, score_fn=score_fn,
                         reward=CompositeReward({"reward_model": (reward_model, 1.0)}),
                         merge_policy=lambda p: p, seed=0, mesh=mesh, rules=DEFAULT_RULES)
  rows = []
  for _ in range(iterations + 1):
    source.observe(state)
    batch = next(source)
    started = time.perf_counter()
    state, metrics = step(state, batch, None)
    jax.block_until_ready(metrics)
    train = time.perf_counter() - started
    rows.append({"generation_s": source.stats["time/generation_s"],
                 "scoring_s": source.stats["time/scoring_s"], "training_s": train,
                 "generated_tokens": int(batch["response_mask"].sum())})
  first, steady = rows[0], rows[1:]
  mean = {k: float(np.mean([r[k] for r in steady])) for k in steady[0]}
  total = mean["generation_s"] + mean["scoring_s"] + mean["training_s"]
  return {
      "model": {k: getattr(config, k) for k in ("d_model", "num_layers", "vocab_size")},
      "ppo": {k: getattr(ppo, k) for k in ("rollout_batch_size", "mini_batch_size", "num_epochs",
                                           "max_prompt_len", "max_new_tokens")},
      "iteration_s": total, **{k: v for k, v in mean.items()},
      "generation_share": mean["generation_s"] / total,
      "scoring_share": mean["scoring_s"] / total,
      "training_share": mean["training_s"] / total,
      "first_iteration_s": first["generation_s"] + first["scoring_s"] + first["training_s"],
      "generation_goal_met": mean["generation_s"] / total <= 0.6,
  }


def main() -> None:
  """Runs the configs the flags name and prints the report as JSON."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--iterations", type=int, default=3)
  parser.add_argument("--configs", default="tiny,d512,d512_inexact")
  args = parser.parse_args()
  retained = retain_freed_host_memory()  # as align_jax.main does
  with tempfile.TemporaryDirectory() as directory:
    words = [" ".join(f"w{(i * 7 + j) % 97}" for j in range(12)) for i in range(400)]
    vocab = train_sentencepiece(words, f"{directory}/spm", 300,
                                extra_options={"hard_vocab_limit": False})
    results = {name: bench(name, args.iterations, vocab) for name in args.configs.split(",")}
  if "d512" in results and "d512_inexact" in results:
    results["exact_ratio_training_cost"] = (results["d512"]["training_s"]
                                            / results["d512_inexact"]["training_s"])
  print(json.dumps({"benchmark": "ppo", "machine": machine(), "peak_rss_mb": peak_rss_mb(),
                    "host_memory_retained": retained,
                    "results": results}, indent=2))


if __name__ == "__main__":
  main()
