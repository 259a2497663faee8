"""Self-Align on an imported Hugging Face model (the Dromedary recipe), all stages.

  python -m align_jax.main --gin_file=gin/models/llama2_7b.gin \
    --gin_file=gin/methods/self_align/dromedary.gin \
    --gin.WORKDIR="'runs/dromedary'" --gin.BASE_MODEL="'path/to/hf_model'"

Stages in WORKDIR/ (each resumable; see `align_jax.methods.self_align.stages`):

  self_instruct      the base model grows tasks from the seed tasks (default: the
                     project's 16, `data/seed_tasks.jsonl`; or the user's file of
                     {"instruction"} or {"text"} lines);
  red_team           topics and one question per (type, topic) for each question type
                     (default: the project's 20 types, `data/red_team_types.jsonl`; or
                     the user's file of {"type", "examples": [{"topic", "question"}]});
  principle_answers  the base model answers each query after the principles and the
                     exemplars (`data/principles.jsonl`, `data/exemplars.jsonl`, or the
                     user's), thoughts first; cleaned by the answer filters;
  engrave            SFT of the base model on query -> answer (the chat template's user
                     and assistant turns, loss on the answer; LoRA when the model's
                     `lora_rank` > 0);
  verbose_answers    the engraved model answers each query under the verbose prompt;
  verbose_clone      SFT of the base model on the verbose answers (>= 128 characters);
  evaluate           TruthfulQA MC1 and BIG-bench HHH accuracy of the base, engraved and
                     verbose-cloned models, for the files given.

WORKDIR/report.md has the stage counts, the evaluation table and answer lengths.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Any, Mapping, Sequence

from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import JsonlError, read_jsonl, read_jsonl_numbered
from align_jax.data.tasks import encode_prompt
from align_jax.data.vocab import load_vocabulary
from align_jax.eval.multiple_choice import hhh_ab, read_hhh, read_truthfulqa_mc, truthfulqa_mc1
from align_jax.methods.self_align import principles as sp
from align_jax.methods.self_align import stages as sa
from align_jax.methods.self_align.answers import AnswerFormat
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import Pipeline, Stage, TrainingSchedule
from align_jax.pipeline.reports import markdown_table, plot_cdfs, write_report
from align_jax.training import train_lm
from align_jax.training.checkpoints import config_record
from align_jax.training.runs import load_run

VERBOSE_INTRO = ("You are a thorough assistant. Answer the user's request in detail: explain "
                 "your reasoning, give examples where they help, and cover each part of the "
                 "request before you finish.")


@dataclasses.dataclass(frozen=True)
class DromedaryFiles:
  """The human input (None: the project's own files) and the evaluation files (None:
  that evaluation is skipped)."""
  seed_tasks: str | None = None
  red_team_types: str | None = None
  principles: str | None = None
  exemplars: str | None = None
  truthfulqa: str | None = None
  hhh: str | None = None


def _packaged(name: str) -> str:
  return str(importlib.resources.files("align_jax.methods.self_align") / "data" / name)


def read_seed_tasks(path: str | None = None) -> list[str]:
  """Seed tasks, one per line as {"instruction": ...} or {"text": ...}."""
  path = path or _packaged("seed_tasks.jsonl")
  tasks = []
  for number, record in read_jsonl_numbered(path):
    text = record.get("instruction", record.get("text"))
    if not isinstance(text, str) or not text.strip():
      raise JsonlError(f"{path}, line {number}: expected a non-empty string under key "
                       f"'instruction' or 'text', got keys {sorted(record)}")
    tasks.append(" ".join(text.split()))
  if not tasks:
    raise ValueError(f"{path}: no seed tasks")
  return tasks


def read_red_team_types(path: str | None = None) -> dict[str, list[tuple[str, str]]]:
  """Question type -> its seed (topic, question) examples."""
  path = path or _packaged("red_team_types.jsonl")
  types: dict[str, list[tuple[str, str]]] = {}
  for number, record in read_jsonl_numbered(path):
    name, examples = record.get("type"), record.get("examples")
    if not isinstance(name, str) or not name.strip():
      raise JsonlError(f"{path}, line {number}: key 'type' must be a non-empty string")
    if (not isinstance(examples, list) or not examples
        or not all(isinstance(e, dict) and isinstance(e.get("topic"), str)
                   and isinstance(e.get("question"), str) for e in examples)):
      raise JsonlError(f"{path}, line {number}: key 'examples' must be a non-empty list of "
                       '{"topic": str, "question": str}')
    if name in types:
      raise JsonlError(f"{path}, line {number}: type {name!r} appears twice")
    types[name] = [(e["topic"].strip(), e["question"].strip()) for e in examples]
  if not types:
    raise ValueError(f"{path}: no red-teaming types")
  return types


def dromedary_prompts(principles: Sequence[sp.Principle], exemplars: Sequence[sp.Exemplar],
                      vocab, chat_template: str | None,
                      form: AnswerFormat = AnswerFormat()) -> sa.PromptSet:
  """Plain-text prompts for the base model's stages; the engraved model is prompted in
  its chat template's user turn (the verbose prompt before the query)."""
  def numbered(tasks):
    lines = "".join(f"{i + 1}. {t}\n" for i, t in enumerate(tasks))
    return f"Here are tasks people give an AI assistant:\n{lines}{len(tasks) + 1}."

  def in_turn(text: str) -> list[int]:
    return encode_prompt(vocab, text, chat_template=chat_template)

  return sa.PromptSet(
      instructions=numbered,
      topics=lambda kind, topics: f"Topics for {kind}:\n" + "".join(
          f"- {t}\n" for t in topics) + "-",
      question=lambda kind, examples, topic: f"Below are {kind}, each after its topic.\n\n"
      + "".join(f"Topic: {t}\nQuestion: {q}\n\n" for t, q in examples)
      + f"Topic: {topic}\nQuestion:",
      principled=lambda query: sp.principles_prompt(principles, exemplars, query, form),
      plain=in_turn,
      verbose=lambda query: in_turn(f"{VERBOSE_INTRO}\n\n{query}"))


def self_align_dromedary(workdir: str, model: TransformerConfig, base_model: str,
                         files: DromedaryFiles = DromedaryFiles(),
                         self_instruct: sa.SelfInstructConfig = sa.SelfInstructConfig(),
                         red_team: sa.RedTeamConfig = sa.RedTeamConfig(),
                         answers: sa.AnswerConfig = sa.AnswerConfig(),
                         engrave: TrainingSchedule = TrainingSchedule(
                             steps=1000, learning_rate=4e-4, batch_size=64, seq_len=512),
                         verbose: sa.VerboseConfig = sa.VerboseConfig(),
                         verbose_clone: TrainingSchedule = TrainingSchedule(
                             steps=1000, learning_rate=4e-4, batch_size=64, seq_len=768),
                         chat_template: str | None = "plain", vocabulary: str | None = None,
                         sampler_batch_size: int = 64, seed: int = 0,
                         mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES
                         ) -> dict[str, Any]:
  """Runs the stages in WORKDIR and writes WORKDIR/report.md (see the module docstring).

  model: the runtime fields for the imported model (dtype, remat, lora_rank; its shape is
  the checkpoint's); base_model: a Hugging Face directory; vocabulary: None for its own
  tokenizer; chat_template: the turns engraving trains and the engraved model is
  prompted in.
  """
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  vocab_path = vocabulary or base_model
  seed_tasks = read_seed_tasks(files.seed_tasks)
  types = read_red_team_types(files.red_team_types)
  principles = sp.load_principles(files.principles)
  exemplars = sp.load_exemplars(files.exemplars)
  vocab = load_vocabulary(vocab_path)

  def base_run():
    """The imported model, loaded by each stage that samples or scores it (and freed
    when the stage ends: training stages load their own copy)."""
    return load_run(base_model, config=model, vocabulary=vocab_path, mesh=mesh_fn(),
                    rules=rules)

  def trained(results, stage):
    return load_run(results[stage]["workdir"], vocabulary=vocab_path, mesh=mesh_fn(),
                    rules=rules)

  form = answers.form
  prompts = dromedary_prompts(principles, exemplars, vocab, chat_template, form)
  settings = {"base_model": base_model, "vocabulary": vocab_path, "seed": seed,
              "model": config_record(model), "chat_template": chat_template}
  base_sampler = lambda results: base_run().sampler(sampler_batch_size)  # noqa: E731

  def sft(schedule: TrainingSchedule, data_stage: str, key: str):
    def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
      data = schedule.data("sft", (results[data_stage][key],), chat_template=chat_template,
                           seed=seed, truncate="keep_response")
      summary = train_lm(stage_dir, model, data, vocab_path, schedule.optimizer(),
                         schedule.loop(), init_from=base_model, mesh=mesh_fn(), rules=rules,
                         seed=seed)
      return {"workdir": stage_dir, "final_loss": summary["final_metrics"].get("loss")}
    return run

  def evaluate(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    truthful = read_truthfulqa_mc(files.truthfulqa) if files.truthfulqa else None
    hhh = read_hhh(files.hhh) if files.hhh else None
    out = {}
    for name, run in (("base", base_run), ("engraved", lambda: trained(results, "engrave")),
                      ("verbose-cloned", lambda: trained(results, "verbose_clone"))):
      sampler = run().sampler(sampler_batch_size)
      row = {}
      if truthful is not None:
        row["truthfulqa_mc1"] = truthfulqa_mc1(sampler, truthful)["accuracy"]
      if hhh is not None:
        row["hhh"] = hhh_ab(sampler, hhh)["accuracy"]
      out[name] = row
    return {"models": out}

  held_out: list[str] = []   # the benchmarks are scored, not prompted with a query
  stages = [
      Stage("self_instruct", sa.self_instruct_stage(self_instruct, seed_tasks, prompts,
                                                    base_sampler, seed),
            {**settings, "config": config_record(self_instruct), "seed_tasks": seed_tasks}),
      Stage("red_team", sa.red_team_stage(red_team, types, prompts, base_sampler, seed),
            {**settings, "config": config_record(red_team), "types": types}),
      Stage("principle_answers", sa.principle_answer_stage(
          answers, prompts, [e.answer for e in exemplars], held_out, base_sampler, seed),
            {**settings, "config": config_record(answers),
             "principles": [dataclasses.asdict(p) for p in principles],
             "exemplars": [dataclasses.asdict(e) for e in exemplars]}),
      Stage("engrave", sft(engrave, "principle_answers", "engrave"),
            {**settings, "schedule": config_record(engrave)}),
      Stage("verbose_answers", sa.verbose_answer_stage(
          verbose, prompts, held_out,
          lambda results: trained(results, "engrave").sampler(sampler_batch_size), seed, form),
            {**settings, "config": config_record(verbose), "intro": VERBOSE_INTRO,
             "form": config_record(form)}),
      Stage("verbose_clone", sft(verbose_clone, "verbose_answers", "clone"),
            {**settings, "schedule": config_record(verbose_clone)}),
      Stage("evaluate", evaluate, {**settings, "truthfulqa": files.truthfulqa,
                                   "hhh": files.hhh}),
  ]
  results = Pipeline(workdir, stages).run()
  return {"report": write_dromedary_report(workdir, results), "results": results}


def write_dromedary_report(workdir: str, results: Mapping[str, Any]) -> str:
  """report.md: stage counts, the evaluation table, answer lengths (PNG)."""
  answers = results["principle_answers"]
  counts = [{"stage": "self-instruct", **sa.sum_rounds(results["self_instruct"]["rounds"])},
            {"stage": "red-team", "topics per type": results["red_team"]["topics_per_type"],
             "questions": results["red_team"]["question_count"]},
            {"stage": "principle-driven answers", **answers["queries"], **answers["filters"]},
            {"stage": "verbose answers", "generated": results["verbose_answers"]["generated"],
             "too short": results["verbose_answers"]["too_short"],
             "kept": results["verbose_answers"]["kept"]}]
  plot = plot_cdfs(fs.join(workdir, "answer_lengths.png"), [
      (label, [len(r["response"].strip()) for r in read_jsonl(results[stage][key])])
      for stage, key, label in (("principle_answers", "engrave", "engraving data"),
                                ("verbose_answers", "clone", "verbose-cloning data"))],
      "Answer lengths before and after verbose cloning", "characters")
  models = results["evaluate"]["models"]
  evaluation = [{"model": m, **{k: f"{v:.3f}" for k, v in row.items()}}
                for m, row in models.items()]
  columns = ["model", *sorted({k for row in models.values() for k in row})]
  return write_report(fs.join(workdir, "report.md"), "align_jax Self-Align (Dromedary recipe)", [
      ("Evaluation", markdown_table(evaluation, columns) if len(columns) > 1
       else "No evaluation files were given."),
      ("Stage counts", "\n\n".join(markdown_table([c], list(c)) for c in counts)),
      ("Answer lengths", f"![answer lengths]({fs.basename(plot)})"),
      ("Training", markdown_table([{"stage": s, "final loss": results[s]["final_loss"]}
                                   for s in ("engrave", "verbose_clone")],
                                  ["stage", "final loss"])),
  ])
