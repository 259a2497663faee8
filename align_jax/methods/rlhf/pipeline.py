"""The RLHF demo: reward model + PPO on the arithmetic world, judged by the gold judge.

Stages per seed (in WORKDIR/seed_<k>/<stage>/, resumable, see `align_jax.pipeline`):
  world        addition problems: supervised data (with a share of wrong answers), RL
               prompts, held-out evaluation prompts
  vocabulary   a sentencepiece vocabulary with digits split
  sft          a tiny policy trained from scratch on the supervised data
  preferences  the SFT policy samples several answers per RL prompt (a resumable
               generation, `judged_samples.jsonl`); the gold judge labels them;
               (correct, wrong) pairs become preference data
  reward       a Bradley-Terry reward model on those pairs (backbone from the SFT
               policy), its score normalised on SFT-policy samples
  ppo          PPO against the reward model with a KL penalty (beta > 0)
  ppo_no_kl    the same with beta = 0, to show what the KL term holds back
  eval         gold accuracy of SFT and both PPO policies on held-out problems
Then `report.md` in WORKDIR: per-seed and mean/std gold accuracy, the PPO margin over
SFT, and reward, KL, length and gold-accuracy curves as PNG.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data import encode_prompt
from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.data.vocab import load_vocabulary
from align_jax.models import Transformer, TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, run_seeds,
                                trained_run, training_stage, vocabulary_stage)
from align_jax.pipeline.generation import generate_to_jsonl, prompt_renderer
from align_jax.pipeline.reports import markdown_table, mean_std, plot_curves, write_report
from align_jax.sampling import Sampler, SamplingConfig
from align_jax.training.checkpoints import config_record
from align_jax.ppo import PPOConfig, train_ppo
from align_jax.rewards import fit_reward_normalization
from align_jax.training import read_metrics, train_reward_model
from align_jax.worlds.arithmetic import ArithmeticConfig, build_world, judge


def world_stage(config: ArithmeticConfig, chat_template: str):
  """Writes the world's supervised data, RL and evaluation prompts and vocabulary corpus."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = build_world(config)
    template = get_template(chat_template)
    rendered = [template.render_text([{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["response"]}])
                for r in world.sft_records()]
    files = {
        "sft.jsonl": world.sft_records(),
        "rl_prompts.jsonl": world.records("rl"),
        "eval_prompts.jsonl": world.records("eval"),
        "vocab_corpus.jsonl": [{"text": t} for t in world.texts() + rendered],
    }
    for name, records in files.items():
      if is_writer() and not fs.exists(fs.join(stage_dir, name)):
        write_jsonl(fs.join(stage_dir, name), records)
    sft = files["sft.jsonl"]
    seen = {r["prompt"] for r in sft + files["rl_prompts.jsonl"]}
    overlap = sum(r["prompt"] in seen for r in files["eval_prompts.jsonl"])
    return {"dir": stage_dir, "sft_correct": float(np.mean([r["correct"] for r in sft])),
            "heldout_overlap": overlap,
            **{name.split(".")[0]: fs.join(stage_dir, name) for name in files}}
  return run


def sample_and_judge(sampler: Sampler, vocab, template, records: Sequence[Mapping[str, Any]],
                     num_samples: int, temperature: float, max_new_tokens: int, key: jax.Array
                     ) -> tuple[list[list[str]], np.ndarray]:
  """Responses [N][num_samples] and their gold correctness (bool [N, num_samples])."""
  prompts = [encode_prompt(vocab, r["prompt"], chat_template=template) for r in records]
  result = sampler.generate(prompts, SamplingConfig(
      max_new_tokens=max_new_tokens, temperature=temperature, num_samples=num_samples), key)
  texts = result.texts
  correct = np.array([[judge(t, r["answer"]) and bool(f) for t, f in zip(row, done)]
                      for row, done, r in zip(texts, result.finished, records)])
  return texts, correct


def gold_accuracy(sampler: Sampler, vocab, template, records, max_new_tokens: int,
                  num_samples: int, seed: int) -> dict[str, float]:
  """Gold accuracy of greedy answers and of samples at temperature 1."""
  _, greedy = sample_and_judge(sampler, vocab, template, records, 1, 0.0, max_new_tokens,
                               jax.random.key(seed))
  _, sampled = sample_and_judge(sampler, vocab, template, records, num_samples, 1.0,
                                max_new_tokens, jax.random.key(seed + 1))
  return {"gold/greedy_accuracy": float(greedy.mean()),
          "gold/sampled_accuracy": float(sampled.mean())}


def preferences_stage(model: TransformerConfig, chat_template: str, num_samples: int,
                      max_new_tokens: int, mesh_fn, rules, seed: int):
  """SFT-policy samples on the RL prompts, judged by the gold judge -> (correct, wrong)
  preference pairs (train / eval), and the samples for the reward normalisation."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    run_sft = trained_run(results, "sft", model, mesh_fn(), rules)
    judged = fs.join(stage_dir, "judged_samples.jsonl")

    def judge_row(record, completions):  # each sample's text and the gold judge's verdict
      texts = [c["text"] for c in completions]
      return {**record, "responses": texts,
              "correct": [judge(c["text"], record["answer"]) and c["finished"]
                          for c in completions]}

    generate_to_jsonl(
        judged, read_jsonl(results["world"]["rl_prompts"]),
        prompt_renderer(run_sft.vocab, chat_template),
        run_sft.sampler(batch_size=256, length_buckets=(16, 32)),
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, num_samples=num_samples),
        seed=seed + 100, chunk_size=256, postprocess=judge_row, desc="preferences")
    records = list(read_jsonl(judged))
    correct = np.array([r["correct"] for r in records])
    rng = np.random.default_rng(seed)
    pairs, samples = [], []
    for record, row, ok in zip(records, [r["responses"] for r in records], correct):
      samples += [{"prompt": record["prompt"], "response": t} for t in row]
      good = [t for t, c in zip(row, ok) if c]
      bad = [t for t, c in zip(row, ok) if not c]
      if good and bad:
        pairs.append({"prompt": record["prompt"], "chosen": good[rng.integers(len(good))],
                      "rejected": bad[rng.integers(len(bad))]})
    if len(pairs) < 20:
      raise ValueError(f"only {len(pairs)} prompts had both a right and a wrong sample; the "
                       "SFT policy is too good or too bad for preference data")
    order = rng.permutation(len(pairs))
    held = max(len(pairs) // 10, 8)
    split = {"train": [pairs[i] for i in order[held:]], "eval": [pairs[i] for i in order[:held]]}
    paths = {}
    for name, rows in (("preferences_train", split["train"]),
                       ("preferences_eval", split["eval"]), ("sft_samples", samples)):
      paths[name] = fs.join(stage_dir, name + ".jsonl")
      if is_writer() and not fs.exists(paths[name]):
        write_jsonl(paths[name], rows)
    return {**paths, "judged_samples": judged, "pairs": len(pairs),
            "sft_sample_accuracy": float(correct.mean())}
  return run


def reward_stage(model: TransformerConfig, schedule: TrainingSchedule, chat_template: str,
                 mesh_fn, rules, seed: int):
  """A reward model on the preference pairs (backbone from the SFT run), normalised on
  SFT-policy samples."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    data = schedule.data("preference", (results["preferences"]["preferences_train"],),
                         eval_files=(results["preferences"]["preferences_eval"],),
                         chat_template=chat_template, seed=seed, eval_batches=4)
    mesh = mesh_fn()
    summary = train_reward_model(stage_dir, model, data, results["vocabulary"]["model"],
                                 schedule.optimizer(), schedule.loop(),
                                 init_from=results["sft"]["workdir"], mesh=mesh, rules=rules,
                                 seed=seed)
    # Normalise: the SFT (reference) policy's samples score mean 0, std 1.
    fit_reward_normalization(stage_dir, list(read_jsonl(results["preferences"]["sft_samples"])),
                             chat_template=chat_template, mesh=mesh, rules=rules)
    final = summary["final_metrics"]
    return {"workdir": stage_dir, "eval_accuracy": final.get("eval/accuracy"),
            "eval_loss": final.get("eval/loss"), "steps": summary["steps"]}
  return run


def ppo_stage(model: TransformerConfig, ppo: PPOConfig, schedule: TrainingSchedule,
              chat_template: str, eval_every: int, eval_prompts: int, mesh_fn, rules,
              seed: int):
  """PPO of the SFT policy against the reward model, with gold accuracy on `eval_prompts`
  evaluation prompts every `eval_every` steps."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    vocab = load_vocabulary(results["vocabulary"]["model"])
    template = get_template(chat_template)
    records = list(read_jsonl(results["world"]["eval_prompts"]))[:eval_prompts]
    mesh = mesh_fn()
    samplers: dict[str, Sampler] = {}

    def evaluate(policy_params, step):
      if "policy" not in samplers:
        samplers["policy"] = Sampler(Transformer(model), None, vocab=vocab, mesh=mesh,
                                     batch_size=256, length_buckets=(16, 32))
      samplers["policy"].params = policy_params
      return gold_accuracy(samplers["policy"], vocab, template, records, ppo.max_new_tokens,
                           num_samples=2, seed=seed + 7)

    loop = dataclasses.replace(schedule.loop(), eval_every=eval_every)
    summary = train_ppo(stage_dir, model, results["world"]["rl_prompts"],
                        results["vocabulary"]["model"], results["sft"]["workdir"],
                        reward_model=results["reward"]["workdir"], ppo=ppo,
                        optimizer=schedule.optimizer(), loop=loop, chat_template=chat_template,
                        mesh=mesh, rules=rules, seed=seed, evaluate=evaluate)
    return {"workdir": stage_dir, "policy": summary["policy"], "steps": summary["steps"],
            "final_metrics": summary["final_metrics"]}
  return run


def eval_stage(model: TransformerConfig, chat_template: str, stages: tuple[str, ...],
               max_new_tokens: int, num_samples: int, mesh_fn, rules, seed: int):
  """Gold accuracy (greedy and sampled) of each stage's policy on the held-out problems."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    vocab = load_vocabulary(results["vocabulary"]["model"])
    template = get_template(chat_template)
    records = list(read_jsonl(results["world"]["eval_prompts"]))
    mesh = mesh_fn()
    rows = []
    for stage in stages:
      sampler = trained_run(results, stage, model, mesh, rules).sampler(
          batch_size=256, length_buckets=(16, 32))
      scores = gold_accuracy(sampler, vocab, template, records, max_new_tokens, num_samples,
                             seed + 1000)
      rows.append({"policy": stage, "n": len(records),
                   "greedy": scores["gold/greedy_accuracy"],
                   "sampled": scores["gold/sampled_accuracy"]})
    return {"rows": rows}
  return run


def seed_pipeline(workdir: str, model: TransformerConfig, world: ArithmeticConfig,
                  sft: TrainingSchedule, reward: TrainingSchedule, ppo_schedule: TrainingSchedule,
                  ppo: PPOConfig, vocab_size: int, chat_template: str, num_samples: int,
                  eval_every: int, eval_prompts: int, mesh_fn, rules, seed: int
                  ) -> dict[str, Any]:
  """Runs one seed's stages, world to eval, in `workdir` and returns their results."""
  settings = {"model": config_record(model), "seed": seed, "chat_template": chat_template}
  world = dataclasses.replace(world, seed=seed)
  no_kl = dataclasses.replace(ppo, kl_coef=0.0, target_kl=None)
  stages = [
      Stage("world", world_stage(world, chat_template), {"world": config_record(world),
                                                         "chat_template": chat_template}),
      # BPE: sentencepiece's unigram trainer keeps only characters on this small corpus,
      # which doubles every sequence ("Assistant" as 9 pieces).
      Stage("vocabulary", vocabulary_stage(vocab_size, split_digits=True, model_type="bpe"),
            {"vocab_size": vocab_size, "model_type": "bpe"}),
      Stage("sft", training_stage(model, sft, "sft", "sft", None, chat_template, mesh_fn, rules,
                                  seed), {**settings, "schedule": config_record(sft)}),
      Stage("preferences", preferences_stage(model, chat_template, num_samples, ppo.max_new_tokens,
                                             mesh_fn, rules, seed),
            {**settings, "num_samples": num_samples}),
      Stage("reward", reward_stage(model, reward, chat_template, mesh_fn, rules, seed),
            {**settings, "schedule": config_record(reward)}),
      Stage("ppo", ppo_stage(model, ppo, ppo_schedule, chat_template, eval_every, eval_prompts,
                             mesh_fn, rules, seed),
            {**settings, "ppo": config_record(ppo), "schedule": config_record(ppo_schedule)}),
      Stage("ppo_no_kl", ppo_stage(model, no_kl, ppo_schedule, chat_template, eval_every,
                                   eval_prompts, mesh_fn, rules, seed),
            {**settings, "ppo": config_record(no_kl), "schedule": config_record(ppo_schedule)}),
      Stage("eval", eval_stage(model, chat_template, ("sft", "ppo", "ppo_no_kl"),
                               ppo.max_new_tokens, num_samples, mesh_fn, rules, seed),
            {**settings, "num_samples": num_samples}),
  ]
  return Pipeline(workdir, stages).run()


def write_demo_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]],
                      seconds: float) -> str:
  """report.md: gold accuracy per seed and across seeds, with the PPO curves as PNG."""
  figures = fs.join(workdir, "report")
  fs.makedirs(figures)
  runs = [(seed, stage) for seed in per_seed for stage in ("ppo", "ppo_no_kl")]
  curves = {}
  for name, key, title in (("reward", "reward/total", "Reward-model reward (normalised)"),
                           ("kl", "objective/kl", "KL(policy || reference) per response"),
                           ("length", "rollout/response_length", "Response length (tokens)"),
                           ("gold", "gold/sampled_accuracy", "Gold accuracy (T=1 samples)")):
    series = [(fs.join(per_seed[seed][stage]["workdir"], "metrics.jsonl"), key,
               f"seed {seed} {'beta>0' if stage == 'ppo' else 'beta=0'}")
              for seed, stage in runs]
    plot_curves(fs.join(figures, f"{name}.png"), series, title, key)
    curves[name] = f"![{title}](report/{name}.png)"

  rows, per_seed_summary = [], []
  for seed, results in per_seed.items():
    by_policy = {r["policy"]: r for r in results["eval"]["rows"]}
    rows += [{"seed": seed, **r} for r in results["eval"]["rows"]]
    summary = {"seed": seed, **{f"{p}_{m}": by_policy[p][m] for p in by_policy
                                for m in ("greedy", "sampled")}}
    for stage in ("ppo", "ppo_no_kl"):
      summary.update({f"{stage}_{k}": v for k, v in
                      _ppo_trajectory(fs.join(results[stage]["workdir"], "metrics.jsonl")).items()})
    per_seed_summary.append(summary)
  summary_rows = []
  for policy in ("sft", "ppo", "ppo_no_kl"):
    values = [r for r in rows if r["policy"] == policy]
    summary_rows.append({"policy": policy,
                         "greedy (mean ± std)": mean_std([r["greedy"] for r in values]),
                         "sampled (mean ± std)": mean_std([r["sampled"] for r in values])})
  seed0 = next(iter(per_seed.values()))
  setup = {
      "SFT data correct": seed0["world"]["sft_correct"],
      "held-out problems also in SFT data or RL prompts": seed0["world"].get("heldout_overlap"),
      "preference pairs": seed0["preferences"]["pairs"],
      "reward model held-out pair accuracy": seed0["reward"]["eval_accuracy"],
  }
  n = rows[0]["n"]
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax RLHF: reward model + PPO on the arithmetic world", [
      ("PPO against SFT", _ppo_headline(per_seed_summary, n)),
      ("Without the KL penalty", _hacking_headline(per_seed_summary)),
      ("Gold accuracy across seeds", markdown_table(summary_rows, [
          "policy", "greedy (mean ± std)", "sampled (mean ± std)"])),
      ("Curves", "\n\n".join(curves.values())),
      ("Gold accuracy per seed", markdown_table(rows, ["seed", "policy", "n", "greedy",
                                                       "sampled"])),
      ("What ran", "Per seed: a tiny policy trained from scratch on addition problems whose "
                   "supervised answers hold arithmetic slips and hedges ('49 or 59') at the "
                   "rates in the world config; its own samples, judged by the gold judge, "
                   "became preference pairs; a reward model learned them; PPO optimised the "
                   "policy against the reward model with a KL penalty and, for comparison, "
                   "without one. Gold accuracy is measured on held-out problems, greedy and "
                   f"on temperature-1 samples. Total wall time {seconds:.0f} s."),
      ("Set-up (first seed)", "```\n" + json.dumps(setup, indent=2) + "\n```"),
  ])


def _ppo_trajectory(metrics_path: str) -> dict[str, float]:
  """Reward and KL at the end of a PPO run (mean of its last 5 iterations), and its gold
  accuracy (T=1 samples, evaluation prompts) at its best evaluation and at its last."""
  records = read_metrics(metrics_path)
  steps = [r for r in records if "reward/total" in r][-5:]
  gold = [(r["step"], r["gold/sampled_accuracy"]) for r in records
          if "gold/sampled_accuracy" in r]
  best = max(gold, key=lambda g: g[1]) if gold else (0, float("nan"))
  return {"reward_end": float(np.mean([r["reward/total"] for r in steps])),
          "kl_end": float(np.mean([r["objective/kl"] for r in steps])),
          "gold_best_step": best[0], "gold_best": best[1],
          "gold_end": gold[-1][1] if gold else float("nan")}


def _spread(summaries, key: str) -> str:
  return mean_std([s[key] for s in summaries])


def _ppo_headline(summaries, n: int) -> str:
  margin = [s["ppo_sampled"] - s["sft_sampled"] for s in summaries]
  greedy = [s["ppo_greedy"] - s["sft_greedy"] for s in summaries]
  return (f"Gold accuracy on {n} held-out problems, {len(summaries)} seed(s) (mean ± std): "
          f"SFT {_spread(summaries, 'sft_sampled')} -> PPO {_spread(summaries, 'ppo_sampled')} "
          f"on temperature-1 samples (PPO minus SFT {mean_std(margin)}, better on "
          f"{sum(m > 0 for m in margin)} of {len(margin)} seeds); greedy "
          f"{_spread(summaries, 'sft_greedy')} -> {_spread(summaries, 'ppo_greedy')} "
          f"(PPO minus SFT {mean_std(greedy)}).")


def _hacking_headline(summaries) -> str:
  """What beta = 0 did: the reward model's score against the gold judge's."""
  text = (f"Without the KL penalty the reward model's (normalised) reward ended at "
          f"{_spread(summaries, 'ppo_no_kl_reward_end')} against "
          f"{_spread(summaries, 'ppo_reward_end')} with it, and the KL to the SFT policy at "
          f"{_spread(summaries, 'ppo_no_kl_kl_end')} against {_spread(summaries, 'ppo_kl_end')}; "
          f"held-out gold accuracy (samples) ended at "
          f"{_spread(summaries, 'ppo_no_kl_sampled')} against "
          f"{_spread(summaries, 'ppo_sampled')} with the penalty (greedy "
          f"{_spread(summaries, 'ppo_no_kl_greedy')} against {_spread(summaries, 'ppo_greedy')}). "
          f"During training its gold accuracy peaked at {_spread(summaries, 'ppo_no_kl_gold_best')} "
          f"and ended at {_spread(summaries, 'ppo_no_kl_gold_end')}.")
  hacked = [s for s in summaries if s["ppo_no_kl_reward_end"] > s["ppo_reward_end"]
            and s["ppo_no_kl_sampled"] < s["ppo_sampled"]]
  if hacked:
    text += (f" Reward hacking on {len(hacked)} of {len(summaries)} seeds: more reward from "
             "the reward model, less accuracy by the gold judge (the reward model cannot "
             "check a sum; the policy drifts to answers it scores highly).")
  else:
    text += " No seed shows reward hacking (more reward with less gold accuracy) in this run."
  return text


def rlhf_demo(workdir: str, model: TransformerConfig,
              world: ArithmeticConfig = ArithmeticConfig(),
              sft: TrainingSchedule = TrainingSchedule(steps=1200, learning_rate=3e-3,
                                                       batch_size=64, seq_len=32),
              reward: TrainingSchedule = TrainingSchedule(steps=150, learning_rate=1e-3,
                                                          batch_size=32, seq_len=32),
              ppo_schedule: TrainingSchedule = TrainingSchedule(steps=40, learning_rate=1e-4,
                                                                warmup_steps=0),
              ppo: PPOConfig = PPOConfig(rollout_batch_size=64, mini_batch_size=16,
                                         num_epochs=2, max_prompt_len=24, max_new_tokens=12,
                                         kl_coef=0.3, missing_eos_penalty=-2.0),
              vocab_size: int = 64, chat_template: str = "plain", num_samples: int = 4,
              eval_every: int = 10, eval_prompts: int = 128, seeds: Sequence[int] = (0,),
              mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the demo for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md."""
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(
          seed_dir, model, world, sft, reward, ppo_schedule, ppo, vocab_size, chat_template,
          num_samples, eval_every, eval_prompts, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_demo_report(workdir, per_seed, seconds),
      lambda results: results["eval"]["rows"], ["policy", "n", "greedy", "sampled"])
