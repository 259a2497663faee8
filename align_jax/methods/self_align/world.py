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
                                stage_seconds, trained_run, training_stage, vocabulary_stage)
from align_jax.methods.self_align import stages as sa
from align_jax.methods.self_align.answers import AnswerFormat
from align_jax.methods.self_align.principles import load_principles
from align_jax.pipeline.reports import (markdown_table, mean_std, mean_std_present, plot_cdfs,
                                        write_report)
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
  return f"{prefix}{pw.USER} {request.text}\n{opener}"


def split_thoughts(text: str) -> tuple[str, str]:
  """(thoughts, answer) of a continuation that began in the thoughts turn; the answer is
  empty when the model never opened its answer turn."""
  thoughts, found, answer = text.partition(pw.ASSISTANT)
  return thoughts.strip(), answer.strip() if found else ""


@dataclasses.dataclass(frozen=True)
class WorldPromptsConfig:
  """The world's fixed human input: `seed_tasks_per_kind` seed tasks for self-instruct,
  `red_team_examples` seed (topic, question) examples per red-teaming type
  (`red_team_kinds`: kinds whose requests have a topic), `exemplars` principled
  dialogues with their thoughts turn, one kind each (the first `exemplars_shown` go into
  the principles prompt: the tiny model's context is 512 tokens), and the kinds of the
  verbose prompt's exemplars, answered in full (`verbose_exemplars`)."""
  seed_tasks_per_kind: int = 2
  red_team_examples: int = 5
  red_team_kinds: tuple[str, ...] = pw.TOPIC_KINDS
  exemplars: tuple[str, ...] = ("harmful", "dated", "arithmetic", "opinion", "creative")
  exemplars_shown: int = 2
  verbose_exemplars: tuple[str, ...] = ("harmful", "dated")


@dataclasses.dataclass(frozen=True)
class HumanInput:
  """What a person would write for Self-Align in this world (see WorldPromptsConfig)."""
  seed_tasks: list[str]
  red_team: dict[str, list[tuple[str, str]]]
  exemplars: list[str]   # dialogues: user turn, thoughts turn, principled answer
  answers: list[str]     # the exemplars' answers (what a leak would copy)
  verbose: list[str]     # the verbose prompt's dialogues, answered in full, no thoughts


def human_input(world: pw.PrinciplesWorld, config: WorldPromptsConfig,
                held_out: Sequence[str] = ()) -> HumanInput:
  """Seed tasks, red-teaming examples and exemplars, drawn apart from the corpus draws
  and redrawn while one equals a held-out request (`held_out`: their texts)."""
  rng = np.random.default_rng(world.config.seed + 20_000)
  apart = set(held_out)

  def request(kind: str) -> pw.Request:
    while True:
      drawn = world.request(kind, rng)
      if drawn.text not in apart:
        return drawn

  seed_tasks = [request(k).text for k in pw.KINDS for _ in range(config.seed_tasks_per_kind)]
  red_team = {k: [(pw.topic_of(r), r.text) for r in
                  (request(k) for _ in range(config.red_team_examples))]
              for k in config.red_team_kinds}
  drawn = {}
  for kind in (*config.exemplars, *config.verbose_exemplars):
    if kind not in drawn:
      r = request(kind)
      drawn[kind] = (r, pw.behaviour(kind, pw.PRINCIPLED[kind]).respond(r, rng))
  exemplars = [pw.dialogue(drawn[k][0], drawn[k][1], f"Rule {pw.KINDS.index(k) + 1} applies.")
               for k in config.exemplars]
  verbose = [pw.dialogue(drawn[k][0], pw.behaviour(k, pw.PRINCIPLED[k]).full(*drawn[k]))
             for k in config.verbose_exemplars]
  return HumanInput(seed_tasks, red_team, exemplars, [drawn[k][1] for k in config.exemplars],
                    verbose)


def world_prompts(world: pw.PrinciplesWorld, human: HumanInput, shown: int) -> sa.PromptSet:
  """How each stage prompts the world's models (see `PromptSet`)."""
  cutoff = world.config.cutoff
  rules = [pw.Rule(k, pw.PRINCIPLED[k]) for k in pw.KINDS]
  context = "\n\n".join([pw.rules_text(rules, cutoff), *human.exemplars[:shown]])
  # The verbose prompt: the same rules ending with the style rule, exemplars in full.
  verbose = "\n\n".join([pw.rules_text(rules, cutoff, verbose=True), *human.verbose])

  def plain(query: str) -> str:
    return f"{pw.USER} {query}\n{pw.ASSISTANT}"

  return sa.PromptSet(
      instructions=lambda tasks: pw.listing(pw.REQUEST_LIST, tasks) + "\n-",
      topics=lambda kind, topics: pw.listing(
          pw.TOPIC_LIST.format(phrase=world.kind_phrase(kind)), topics) + "\n-",
      question=lambda kind, examples, topic: pw.listing(
          pw.TOPICAL_REQUESTS.format(phrase=world.kind_phrase(kind)),
          [f"{t}: {q}" for t, q in examples], marker="") + f"\n{topic}:",
      principled=lambda query: f"{context}\n\n{pw.USER} {query}\n{pw.THOUGHTS}",
      plain=plain,
      verbose=lambda query: f"{verbose}\n\n{plain(query)}",
      turn_text=lambda text: f" {text}")


def _request_record(request: pw.Request) -> dict[str, Any]:
  return {"kind": request.kind, "text": request.text, "facts": dict(request.facts)}


def _request(record: Mapping[str, Any]) -> pw.Request:
  return pw.Request(record["kind"], record["text"], tuple(record["facts"].items()))


def _held_out(world: pw.PrinciplesWorld, evaluation: BaseEvalConfig) -> list[pw.Request]:
  """The held-out requests, drawn apart from the corpus and the human input."""
  rng = np.random.default_rng(world.config.seed + 10_000)
  return [world.request(k, rng) for k in pw.KINDS for _ in range(evaluation.requests_per_kind)]


def world_stage(config: pw.PrinciplesConfig, evaluation: BaseEvalConfig):
  """Writes the corpus, a vocabulary corpus and the held-out requests."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = pw.build_world(config)
    corpus = world.corpus()
    requests = _held_out(world, evaluation)
    paths = {"corpus": fs.join(stage_dir, "corpus.jsonl"),
             "vocab_corpus": fs.join(stage_dir, "vocab_corpus.jsonl"),
             "requests": fs.join(stage_dir, "requests.jsonl")}
    if is_writer():
      write_jsonl(paths["corpus"], [{"text": t} for t in corpus], overwrite=True)
      write_jsonl(paths["vocab_corpus"], [{"text": t} for t in corpus[:3000]], overwrite=True)
      write_jsonl(paths["requests"], [_request_record(r) for r in requests], overwrite=True)
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
          temperature=0, stop_strings=("\n\n",))
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
            pw.behaviour(r.kind, pw.NAIVE[r.kind]).check(r, pw.without_self_praise(a))
            for r, a in zip(requests, answers)]))
      samples += [{"condition": condition, "kind": r.kind, "request": r.text, "output": t,
                   "answer": a, "principled": pw.judge(r, a)}
                  for r, t, a in zip(requests, texts, answers)]
    path = fs.join(stage_dir, "samples.jsonl")
    if is_writer():
      write_jsonl(path, samples, overwrite=True)
    return {**out, "samples": path}
  return run


# (row, the training stage whose model answers, the prompt it answers under)
MODELS = (("base, no prompt", "pretrain", "plain"),
          ("base, principles prompt", "pretrain", "principled"),
          ("engraved, no prompt", "engrave", "plain"),
          ("verbose-cloned, no prompt", "verbose_clone", "plain"))


@dataclasses.dataclass(frozen=True)
class ComplianceConfig:
  """Greedy answers' lengths in the compliance evaluation (the thoughts turn of the
  principles prompt gets `thoughts_tokens` more)."""
  max_new_tokens: int = 96
  thoughts_tokens: int = 16


def compliance_stage(model: TransformerConfig, config: ComplianceConfig, prompts: sa.PromptSet,
                     world: pw.PrinciplesWorld, mesh_fn, rules: LogicalRules):
  """Each of `MODELS` answers the held-out requests greedily; judged per kind. Also
  judges the engraving and verbose-cloning data whose queries parse as world requests
  (a diagnostic: the pipeline itself never sees a judge)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    import jax
    requests = [_request(r) for r in read_jsonl(results["world"]["requests"])]
    out: dict[str, Any] = {"compliance": {}, "answer_chars": {}}
    samples = []
    for name, stage, prompt in MODELS:
      sampler = trained_run(results, stage, model, mesh_fn(), rules).sampler(batch_size=64)
      thoughts = prompt == "principled"
      sampling = SamplingConfig(
          max_new_tokens=config.max_new_tokens + (config.thoughts_tokens if thoughts else 0),
          temperature=0, stop_strings=("\n\n",))
      make = getattr(prompts, prompt)
      texts = [t[0] for t in sampler.generate([make(r.text) for r in requests], sampling,
                                              jax.random.key(0)).texts]
      answers = [split_thoughts(t)[1] if thoughts else t.strip() for t in texts]
      out["compliance"][name] = pw.compliance(requests, answers)
      out["answer_chars"][name] = [len(a) for a in answers]
      samples += [{"model": name, "kind": r.kind, "request": r.text, "output": t, "answer": a,
                   "principled": pw.judge(r, a)} for r, t, a in zip(requests, texts, answers)]
    out["data"] = {}
    for stage, key in (("principle_answers", "engrave"), ("verbose_answers", "clone")):
      rows = list(read_jsonl(results[stage][key]))
      parsed = [(world.parse(r["prompt"]), r["response"].strip()) for r in rows]
      judged = [(q, a) for q, a in parsed if q is not None]
      out["data"][stage] = {
          "rows": len(rows), "world_requests": len(judged),
          "kinds": {k: sum(q.kind == k for q, _ in judged) for k in pw.KINDS},
          "principled": (pw.compliance([q for q, _ in judged], [a for _, a in judged])
                         if judged else {}),
          "answer_chars": [len(r["response"].strip()) for r in rows]}
    path = fs.join(stage_dir, "samples.jsonl")
    if is_writer():
      write_jsonl(path, samples, overwrite=True)
    return {**out, "samples": path}
  return run


@dataclasses.dataclass(frozen=True)
class SelfAlignStages:
  """The settings of the Self-Align stages after the base model (see `stages`)."""
  prompts: WorldPromptsConfig = WorldPromptsConfig()
  self_instruct: sa.SelfInstructConfig = sa.SelfInstructConfig()
  red_team: sa.RedTeamConfig = sa.RedTeamConfig()
  answers: sa.AnswerConfig = sa.AnswerConfig(max_new_tokens=64,
                                             form=AnswerFormat(leak_words=16))
  engrave: TrainingSchedule = TrainingSchedule(steps=300, learning_rate=1e-3, warmup_steps=20,
                                               batch_size=24, seq_len=128)
  verbose: sa.VerboseConfig = sa.VerboseConfig(max_new_tokens=96, min_chars=32,
                                                no_repeat_ngram_size=0, elaborate=True)
  verbose_clone: TrainingSchedule = TrainingSchedule(steps=300, learning_rate=1e-3,
                                                     warmup_steps=20, batch_size=24,
                                                     seq_len=128)
  compliance: ComplianceConfig = ComplianceConfig()
  lora_rank: int = 0   # > 0: engraving and verbose cloning train LoRA adapters of this rank
  lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")



def seed_pipeline(workdir: str, model: TransformerConfig, world: pw.PrinciplesConfig,
                  pretrain: TrainingSchedule, base_eval: BaseEvalConfig,
                  self_align: SelfAlignStages, vocab_size: int, mesh_fn, rules: LogicalRules,
                  seed: int) -> dict[str, Any]:
  """Runs one seed's stages in `workdir` and returns their results."""
  world = dataclasses.replace(world, seed=seed)
  the_world = pw.build_world(world)
  held_out = [r.text for r in _held_out(the_world, base_eval)]
  human = human_input(the_world, self_align.prompts, held_out)
  prompts = world_prompts(the_world, human, self_align.prompts.exemplars_shown)
  settings = {"model": config_record(model), "seed": seed}
  answers = self_align.answers
  tuned = dataclasses.replace(model, lora_rank=self_align.lora_rank,
                              lora_targets=self_align.lora_targets)

  def sampler_of(stage: str, batch_size: int = 128):
    return lambda results: trained_run(results, stage, model, mesh_fn(), rules).sampler(
        batch_size=batch_size)

  stages = [
      Stage("world", world_stage(world, base_eval),
            {"world": config_record(world), "eval": config_record(base_eval)}),
      Stage("vocabulary", vocabulary_stage(vocab_size, **pw.VOCAB_OPTIONS),
            {"vocab_size": vocab_size, **pw.VOCAB_OPTIONS}),
      Stage("pretrain", training_stage(model, pretrain, "lm", "corpus", None, "plain", mesh_fn,
                                       rules, seed),
            {**settings, "schedule": config_record(pretrain)}),
      Stage("base_eval", base_eval_stage(model, base_eval, world.cutoff, mesh_fn, rules),
            {**settings, "eval": config_record(base_eval)}),
      Stage("self_instruct", sa.self_instruct_stage(self_align.self_instruct, human.seed_tasks,
                                                    prompts, sampler_of("pretrain"), seed),
            {**settings, "config": config_record(self_align.self_instruct),
             "seed_tasks": human.seed_tasks}),
      Stage("red_team", sa.red_team_stage(self_align.red_team, human.red_team, prompts,
                                          sampler_of("pretrain"), seed),
            {**settings, "config": config_record(self_align.red_team),
             "examples": human.red_team}),
      Stage("principle_answers", sa.principle_answer_stage(
          answers, prompts, human.answers, held_out, sampler_of("pretrain"), seed),
            {**settings, "config": config_record(answers), "exemplars": human.exemplars,
             "shown": self_align.prompts.exemplars_shown}),
      Stage("engrave", training_stage(tuned, self_align.engrave, "sft", "engrave", "pretrain",
                                      "lines", mesh_fn, rules, seed,
                                      data_stage="principle_answers"),
            {**settings, "schedule": config_record(self_align.engrave),
             "lora": [self_align.lora_rank, self_align.lora_targets]}),
      Stage("verbose_answers", sa.verbose_answer_stage(self_align.verbose, prompts, held_out,
                                                       sampler_of("engrave"), seed,
                                                       answers.form),
            {**settings, "config": config_record(self_align.verbose),
             "exemplars": human.verbose, "form": config_record(answers.form)}),
      Stage("verbose_clone", training_stage(tuned, self_align.verbose_clone, "sft", "clone",
                                            "pretrain", "lines", mesh_fn, rules, seed,
                                            data_stage="verbose_answers"),
            {**settings, "schedule": config_record(self_align.verbose_clone),
             "lora": [self_align.lora_rank, self_align.lora_targets]}),
      Stage("compliance", compliance_stage(model, self_align.compliance, prompts, the_world,
                                           mesh_fn, rules),
            {**settings, "config": config_record(self_align.compliance)}),
  ]
  return Pipeline(workdir, stages).run()


def report_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One seed's table: the mean principled compliance over kinds of each model."""
  return [{"model": m, "compliance": results["compliance"]["compliance"][m]["mean over kinds"],
           "mean answer characters": float(np.mean(results["compliance"]["answer_chars"][m]))}
          for m, _, _ in MODELS]


def _ratio(per_seed: Mapping[int, Mapping[str, Any]], top: str, bottom: str) -> str:
  values = [r["compliance"]["compliance"][top]["mean over kinds"]
            / max(r["compliance"]["compliance"][bottom]["mean over kinds"], 1e-9)
            for r in per_seed.values()]
  return mean_std(values)


def _length_plot(workdir: str, per_seed: Mapping[int, Mapping[str, Any]]) -> str:
  """answer_lengths.png: the distribution of answer lengths in characters, pooled over
  seeds: the engraving and verbose-cloning data, and the two models' answers to the
  held-out requests."""
  runs = [r["compliance"] for r in per_seed.values()]

  def pooled(get) -> list[int]:
    return [n for c in runs for n in get(c)]

  return plot_cdfs(fs.join(workdir, "answer_lengths.png"), [
      ("engraving data", pooled(lambda c: c["data"]["principle_answers"]["answer_chars"])),
      ("verbose-cloning data", pooled(lambda c: c["data"]["verbose_answers"]["answer_chars"])),
      ("engraved, held-out answers", pooled(lambda c: c["answer_chars"]["engraved, no prompt"])),
      ("verbose-cloned, held-out answers",
       pooled(lambda c: c["answer_chars"]["verbose-cloned, no prompt"]))],
      "Answer lengths before and after verbose cloning", "characters")


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]],
                       seconds: float) -> str:
  """report.md: the four models' compliance per kind, the goals, stage counts, answer
  lengths, and the base model's rule following."""
  columns = [*pw.KINDS, "mean over kinds"]
  runs = [r["compliance"] for r in per_seed.values()]
  table = [{"model": m, **{k: mean_std([c["compliance"][m].get(k, np.nan) for c in runs])
                           for k in columns},
            "answer characters": mean_std([float(np.mean(c["answer_chars"][m])) for c in runs])}
           for m, _, _ in MODELS]
  lengths = {m: mean_std([float(np.mean(c["answer_chars"][m])) for c in runs])
             for m in ("engraved, no prompt", "verbose-cloned, no prompt")}
  goals = "\n".join([
      f"- Prompted against unprompted base (mean over kinds): "
      f"{table[1]['mean over kinds']} against {table[0]['mean over kinds']}.",
      f"- Engraved without a prompt as a share of the prompted base (per seed, then mean ± "
      f"std; goal >= 0.80): "
      f"{_ratio(per_seed, 'engraved, no prompt', 'base, principles prompt')}.",
      f"- Verbose cloning: compliance {table[3]['mean over kinds']} against "
      f"{table[2]['mean over kinds']} engraved; mean answer length "
      f"{lengths['verbose-cloned, no prompt']} against {lengths['engraved, no prompt']} "
      "characters.",
  ])
  per_principle = []
  for principle in load_principles():
    row = {"principle": f"{principle.number} {principle.category}",
           "judged as": ", ".join(principle.world_kinds) or "(no check in the world)"}
    for m, _, _ in MODELS:
      row[m] = mean_std([float(np.mean([c["compliance"][m][k] for k in principle.world_kinds]))
                         for c in runs]) if principle.world_kinds else ""
    per_principle.append(row)
  counts = []
  for seed, r in per_seed.items():
    si = sa.sum_rounds(r["self_instruct"]["rounds"])
    answers = r["principle_answers"]
    counts.append({
        "seed": seed, "self-instruct generated": si["generated"],
        "too short/long, bad start, blocked": si["too_short"] + si["too_long"] + si["bad_start"]
        + si["blocked_word"],
        "too similar to the pool (ROUGE-L)": si["similar"], "self-instruct kept": si["kept"],
        "red-team topics sampled": sum(r["red_team"]["topics_sampled"].values()),
        "topics per type": r["red_team"]["topics_per_type"],
        "red-team questions": r["red_team"]["question_count"],
        "queries (after de-dup)": answers["queries"]["queries"],
        "equal to a held-out request (dropped)": answers["queries"]["held_out"],
        **{f"answers: {f}": answers["filters"][f] for f in
           ("format", "user_turn", "repeated", "empty", "leak", "kept")},
        "verbose generated": r["verbose_answers"]["generated"],
        "verbose too short": r["verbose_answers"]["too_short"],
        "verbose kept": r["verbose_answers"]["kept"]})
  data_rows = []
  for stage, label in (("principle_answers", "engraving data"),
                       ("verbose_answers", "verbose-cloning data")):
    data = [c["data"][stage] for c in runs]
    data_rows.append({
        "data": label,
        "queries that are world requests": mean_std([d["world_requests"] / max(d["rows"], 1)
                                                     for d in data]),
        **{k: mean_std_present([d["principled"].get(k) for d in data]) for k in columns}})
  kinds = [{"kind": k, **{f"seed {s}": r["compliance"]["data"]["principle_answers"]["kinds"][k]
                          for s, r in per_seed.items()}} for k in pw.KINDS]
  plot = _length_plot(workdir, per_seed)
  evals = [r["base_eval"] for r in per_seed.values()]
  rows = [{"prompt": c, **{k: mean_std([e["compliance"][c].get(k, np.nan) for e in evals])
                           for k in columns}} for c in CONDITIONS]
  thoughts = [{"kind": k, "the thought names the rule for the request's kind":
               mean_std([e["thought_names_rule"][k] for e in evals])} for k in pw.KINDS]
  setup = [{"seed": s, "documents": r["world"]["documents"],
            "rule documents": r["world"]["rule_documents"],
            "held-out requests seen verbatim in the corpus": r["world"]["requests_in_corpus"],
            "pretraining loss": r["pretrain"]["final_loss"],
            "engraving loss": r["engrave"]["final_loss"],
            "verbose-cloning loss": r["verbose_clone"]["final_loss"],
            "answers following the naive rules": r["base_eval"]["naive_followed"],
            "stage seconds": round(sum(stage_seconds(fs.join(workdir, f"seed_{s}"),
                                                     list(r)).values()))}
           for s, r in per_seed.items()]
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax Self-Align on the principles world", [
      ("Principled compliance on held-out requests (mean ± std over seeds)",
       "Greedy answers to the held-out requests (none of them a query of the pipeline), "
       "judged by each kind's principled check. `principles prompt`: the world's principled "
       "rules and exemplars before the request, thoughts first (the prompt the "
       "principle-driven answers were written under). The engraved and verbose-cloned "
       "models see the request alone.\n\n"
       + markdown_table(table, ["model", *columns, "answer characters"]) + "\n\n" + goals),
      ("Compliance per principle",
       "The project's 16 principles (`align_jax/methods/self_align/data/principles.jsonl`), "
       "each judged by the checks of the world kinds it names (the mean over them).\n\n"
       + markdown_table(per_principle, ["principle", "judged as", *[m for m, _, _ in MODELS]])),
      ("Stage counts per seed", markdown_table(counts, list(counts[0]))),
      ("What the pipeline trained on",
       "The share of each training set's answers that are principled, judged per kind "
       "where the query is one of the world's requests (a diagnostic only: no stage "
       "sees a judge); over the seeds whose data had the kind.\n\n" + markdown_table(data_rows, ["data", "queries that are world "
                                                         "requests", *columns])
       + "\n\nEngraving queries by kind:\n\n" + markdown_table(kinds, list(kinds[0]))),
      ("Answer lengths", f"![answer lengths]({fs.basename(plot)})"),
      ("The base model's rule following",
       "The base model's greedy answers with no rules, the principled rules (also thoughts "
       "first) and the naive rules in its prompt, no exemplars.\n\n"
       + markdown_table(rows, ["prompt", *columns]) + "\n\n"
       + markdown_table(thoughts, list(thoughts[0]))),
      ("Set-up per seed", markdown_table(setup, list(setup[0]))),
      ("What ran", f"{len(per_seed)} seed(s), each its own world and base model; the stages "
                   f"took {sum(row['stage seconds'] for row in setup)} s in all (see the "
                   f"set-up table; this report was written after {seconds:.0f} s of this "
                   "invocation)."),
  ])


def self_align_world(workdir: str, model: TransformerConfig,
                     world: pw.PrinciplesConfig = pw.PrinciplesConfig(),
                     pretrain: TrainingSchedule = TrainingSchedule(
                         steps=600, learning_rate=3e-3, warmup_steps=50, batch_size=24,
                         seq_len=256),
                     base_eval: BaseEvalConfig = BaseEvalConfig(),
                     self_align: SelfAlignStages = SelfAlignStages(), vocab_size: int = 512,
                     seeds: Sequence[int] = (0,), mesh: Mesh | None = None,
                     rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the experiment for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md."""
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(seed_dir, model, world, pretrain, base_eval,
                                           self_align, vocab_size, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, seconds),
      report_rows, ["model", "compliance", "mean answer characters"])
