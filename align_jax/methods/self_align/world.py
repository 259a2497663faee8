"""Self-Align on the principles world, first part: the base model, and whether it follows
rules written in its prompt (the ability principle-driven self-alignment builds on).

Per seed, in WORKDIR/seed_<k>/:

  world      the base corpus (`align_jax.worlds.principles`: random rule sets with
             dialogues that follow them, plain rule-less dialogues) and held-out requests
             of every kind, drawn apart from the corpus;
  vocabulary a BPE vocabulary that keeps newlines;
  pretrain   a tiny model trained from scratch on the corpus;
  base_eval  greedy answers of the base model to the held-out requests under four
             prompts: no rules; the world's principled rules; the same rules with an
             internal-thoughts turn first (naming the rule that applies); the naive rules
             (the way a rule-less assistant answers, written as rules). Each answer is
             judged; `samples.jsonl` keeps them.

WORKDIR/report.md has the principled compliance per kind under each prompt (mean ± std
over seeds), how often the thoughts name the right rule, and how often answers under the
naive rules follow those.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, run_seeds,
                                trained_run, training_stage, vocabulary_stage)
from align_jax.pipeline.reports import markdown_table, mean_std, write_report
from align_jax.sampling import SamplingConfig
from align_jax.training.checkpoints import config_record
from align_jax.worlds import principles as pw

CONDITIONS = ("no rules", "principled rules", "principled rules, thoughts first",
              "naive rules")


@dataclasses.dataclass(frozen=True)
class BaseEvalConfig:
  """Held-out requests per kind and the greedy answers' lengths (the thoughts turn gets
  `thoughts_tokens` more)."""
  requests_per_kind: int = 30
  max_new_tokens: int = 48
  thoughts_tokens: int = 16


def condition_prompt(condition: str, request: pw.Request, cutoff: int) -> str:
  """The prompt a request gets under a condition; it ends where the model writes."""
  prefix = ""
  if condition != "no rules":
    ways = pw.NAIVE if condition == "naive rules" else pw.PRINCIPLED
    prefix = pw.rules_text([pw.Rule(k, ways[k]) for k in pw.KINDS], cutoff) + "\n\n"
  opener = pw.THOUGHTS if condition.endswith("thoughts first") else pw.ASSISTANT
  return f"{prefix}{pw.USER} {request.text}\n\n{opener}"


def split_thoughts(text: str) -> tuple[str, str]:
  """(thoughts, answer) of a continuation that began in the thoughts turn; the answer is
  empty when the model never opened its answer turn."""
  thoughts, found, answer = text.partition(pw.ASSISTANT)
  return thoughts.strip(), answer.strip() if found else ""


def _request_record(request: pw.Request) -> dict[str, Any]:
  return {"kind": request.kind, "text": request.text, "facts": dict(request.facts)}


def _request(record: Mapping[str, Any]) -> pw.Request:
  return pw.Request(record["kind"], record["text"], tuple(record["facts"].items()))


def world_stage(config: pw.PrinciplesConfig, evaluation: BaseEvalConfig):
  """Writes the corpus, a vocabulary corpus and the held-out requests."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = pw.build_world(config)
    corpus = world.corpus()
    rng = np.random.default_rng(config.seed + 10_000)  # apart from the corpus draws
    requests = [world.request(k, rng) for k in pw.KINDS
                for _ in range(evaluation.requests_per_kind)]
    paths = {"corpus": fs.join(stage_dir, "corpus.jsonl"),
             "vocab_corpus": fs.join(stage_dir, "vocab_corpus.jsonl"),
             "requests": fs.join(stage_dir, "requests.jsonl")}
    if is_writer():
      write_jsonl(paths["corpus"], [{"text": t} for t in corpus])
      write_jsonl(paths["vocab_corpus"], [{"text": t} for t in corpus[:3000]])
      write_jsonl(paths["requests"], [_request_record(r) for r in requests])
    seen = {line for text in corpus for line in text.splitlines()}
    return {**paths, "documents": len(corpus),
            "rule_documents": sum(t.startswith("Rules of conduct:") for t in corpus),
            "requests_in_corpus": sum(f"{pw.USER} {r.text}" in seen for r in requests)}
  return run


def base_eval_stage(model: TransformerConfig, config: BaseEvalConfig, cutoff: int, mesh_fn,
                    rules: LogicalRules):
  """The base model's greedy answers under each condition, judged."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    import jax
    sampler = trained_run(results, "pretrain", model, mesh_fn(), rules).sampler(batch_size=64)
    requests = [_request(r) for r in read_jsonl(results["world"]["requests"])]
    out: dict[str, Any] = {"compliance": {}, "thought_names_rule": {}, "naive_followed": None}
    samples = []
    for condition in CONDITIONS:
      thoughts = condition.endswith("thoughts first")
      sampling = SamplingConfig(
          max_new_tokens=config.max_new_tokens + (config.thoughts_tokens if thoughts else 0),
          temperature=0, stop_strings=(f"\n\n{pw.USER}",) if thoughts else ("\n\n",))
      generated = sampler.generate([condition_prompt(condition, r, cutoff) for r in requests],
                                   sampling, jax.random.key(0))
      texts = [t[0] for t in generated.texts]
      answers = [split_thoughts(t)[1] if thoughts else t.strip() for t in texts]
      out["compliance"][condition] = pw.compliance(requests, answers)
      if thoughts:  # principled rules are numbered in KINDS order
        named = [f"Rule {pw.KINDS.index(r.kind) + 1} " in split_thoughts(t)[0] + " "
                 for r, t in zip(requests, texts)]
        out["thought_names_rule"] = {k: float(np.mean([n for r, n in zip(requests, named)
                                                       if r.kind == k])) for k in pw.KINDS}
      if condition == "naive rules":
        out["naive_followed"] = float(np.mean([
            pw.behaviour(r.kind, pw.NAIVE[r.kind]).check(r, a) for r, a in zip(requests, answers)]))
      samples += [{"condition": condition, "kind": r.kind, "request": r.text, "output": t,
                   "answer": a, "principled": pw.judge(r, a)}
                  for r, t, a in zip(requests, texts, answers)]
    path = fs.join(stage_dir, "samples.jsonl")
    if is_writer():
      write_jsonl(path, samples)
    return {**out, "samples": path}
  return run


def seed_pipeline(workdir: str, model: TransformerConfig, world: pw.PrinciplesConfig,
                  pretrain: TrainingSchedule, base_eval: BaseEvalConfig, vocab_size: int,
                  mesh_fn, rules: LogicalRules, seed: int) -> dict[str, Any]:
  """Runs one seed's stages in `workdir` and returns their results."""
  world = dataclasses.replace(world, seed=seed)
  settings = {"model": config_record(model), "seed": seed}
  vocab_options = {"model_type": "bpe", "normalization_rule_name": "identity",
                   "remove_extra_whitespaces": False, "user_defined_symbols": "\n",
                   "split_digits": True}
  stages = [
      Stage("world", world_stage(world, base_eval),
            {"world": config_record(world), "eval": config_record(base_eval)}),
      Stage("vocabulary", vocabulary_stage(vocab_size, **vocab_options),
            {"vocab_size": vocab_size, **vocab_options}),
      Stage("pretrain", training_stage(model, pretrain, "lm", "corpus", None, "plain", mesh_fn,
                                       rules, seed),
            {**settings, "schedule": config_record(pretrain)}),
      Stage("base_eval", base_eval_stage(model, base_eval, world.cutoff, mesh_fn, rules),
            {**settings, "eval": config_record(base_eval)}),
  ]
  return Pipeline(workdir, stages).run()


def report_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One seed's table: the mean principled compliance over kinds under each condition."""
  return [{"condition": c, "compliance": results["base_eval"]["compliance"][c]["mean over kinds"]}
          for c in CONDITIONS]


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]],
                       seconds: float) -> str:
  """report.md: compliance per kind and condition, thoughts, naive rules, set-up."""
  evals = [r["base_eval"] for r in per_seed.values()]
  columns = [*pw.KINDS, "mean over kinds"]
  rows = [{"prompt": c, **{k: mean_std([e["compliance"][c].get(k, np.nan) for e in evals])
                           for k in columns}} for c in CONDITIONS]
  thoughts = [{"kind": k, "the thought names the rule for the request's kind":
               mean_std([e["thought_names_rule"][k] for e in evals])} for k in pw.KINDS]
  setup = [{"seed": s, "documents": r["world"]["documents"],
            "rule documents": r["world"]["rule_documents"],
            "held-out requests seen verbatim in the corpus": r["world"]["requests_in_corpus"],
            "pretraining loss": r["pretrain"]["final_loss"],
            "answers following the naive rules": r["base_eval"]["naive_followed"]}
           for s, r in per_seed.items()]
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax Self-Align: does the base model follow rules in its prompt?", [
      ("Principled compliance of the base model's greedy answers (mean ± std over seeds)",
       "Each held-out request is judged by its kind's principled check. `principled rules`: "
       "the world's principled way of handling every kind, written as numbered rules "
       "before the request; `thoughts first`: the model first writes its internal thoughts "
       "(which rule applies), then answers; `naive rules`: the rule-less assistant's ways "
       "written as rules (a control: following them lowers principled compliance).\n\n"
       + markdown_table(rows, ["prompt", *columns])),
      ("Internal thoughts", markdown_table(thoughts, list(thoughts[0]))),
      ("Set-up per seed", markdown_table(setup, list(setup[0]))),
      ("What ran", f"{len(per_seed)} seed(s), each its own world and base model. Total wall "
                   f"time {seconds:.0f} s."),
  ])


def self_align_world(workdir: str, model: TransformerConfig,
                     world: pw.PrinciplesConfig = pw.PrinciplesConfig(),
                     pretrain: TrainingSchedule = TrainingSchedule(
                         steps=600, learning_rate=3e-3, warmup_steps=50, batch_size=24,
                         seq_len=256),
                     base_eval: BaseEvalConfig = BaseEvalConfig(), vocab_size: int = 512,
                     seeds: Sequence[int] = (0,), mesh: Mesh | None = None,
                     rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the experiment for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md."""
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(seed_dir, model, world, pretrain, base_eval,
                                           vocab_size, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, seconds),
      report_rows, ["condition", "compliance"])
