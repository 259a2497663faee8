"""RECITE on the encyclopedia world: does reciting help a tiny model answer held-out facts?

Stages per seed (in WORKDIR/seed_<k>/<stage>/, resumable, see `align_jax.pipeline`):
  world          the seed's encyclopedia and the pretraining documents
  vocabulary     a sentencepiece vocabulary that keeps newlines (the prompts' separators)
  pretrain       a tiny model trained from scratch on the documents
  hint_data      the pretrained model writes questions about every paragraph; each
                 becomes a question -> hint -> passage example (hint fine-tuning's data)
  hint_finetune  the pretrained model fine-tuned on those (with pretraining replay)
  eval           on held-out entities: direct answering, chain of thought,
                 recite-and-answer (1/5/20 paths), hint-diversified recitation, the
                 hint-fine-tuned model's recitation (single-hop); direct, chain of thought
                 and multiple recitations (two-hop); EM/F1, the error analysis, EM by paths,
                 and diagnostics of where recitation fails
`recite_world` runs them for several seeds and writes WORKDIR/report.md.

Pretraining documents: every paragraph as a `Hint: ... / Recitation: ...` block (the
passage-prompt format, so the model can recite a paragraph from its hint), repeated so
that it is memorised; for the QA pairs of training entities only, few-shot documents in
every prompt format (direct, chain of thought, recite, answer, hint, multi-recitation);
and reading / hint documents from skill worlds (other seeds, other names) whose passages
the model never memorises. Held-out entities' facts appear only in their paragraphs:
answering them directly needs knowledge the model holds as passages, reciting first
retrieves the passage and then reads the answer from it, which is what the experiment
measures.

Why skill worlds: a model this small, shown reading and hint documents only about the
training entities, memorises their answers instead of learning to read: it answers from
a passage only what it already knows about the entity, and writes hints that name the
exemplar's entity instead of the question's. Documents about never-memorised entities
can only be completed from the context, so reading and copying names become skills.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.methods.recite import analysis
from align_jax.methods.recite import prompts as prompt_lib
from align_jax.methods.recite.recite import ReciteConfig, Reciter
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, run_seeds,
                                stage_seconds, training_stage, vocabulary_stage)
from align_jax.pipeline.reports import (markdown_table, mean_std, plot_curves, plot_lines,
                                        write_report)
from align_jax.sampling import Sampler
from align_jax.training.checkpoints import config_record
from align_jax.training.runs import load_run
from align_jax.worlds.encyclopedia import (EncyclopediaConfig, EncyclopediaWorld, QAPair,
                                           build_world, passage_hint)

NEWLINE_VOCABULARY = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                      "user_defined_symbols": ["\n"]}


def exemplar_for(world: EncyclopediaWorld, qa: QAPair) -> prompt_lib.Exemplar:
  """The QA pair with the paragraph that states each hop's fact (its subject's own)."""
  locations = [hop[0] for hop in qa.hop_evidence]
  return prompt_lib.Exemplar(
      question=qa.question, answer=qa.answers[0],
      passages=tuple(world.paragraph_text(*loc) for loc in locations),
      hints=tuple(passage_hint(*loc) for loc in locations),
      reasoning=" ".join(f"{s}'s {r.replace('_', ' ')} is {v}." for s, r, v in qa.facts))


def _complete(prompt: str, continuation: str) -> str:
  return f"{prompt} {continuation}"


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What the tiny model is pretrained on (see the module docstring).

  shots: exemplars in every few-shot document (and in the evaluation prompts).
  passage_repeats: copies of each passage document (passages must be memorised).
  qa_repeats: copies of the training entities' QA documents (each with fresh exemplars).
  skill_worlds: further encyclopedias (other seeds, so other names) whose passages are
    never memorised: their reading (passage, question -> answer) and hint
    (question -> hint) documents can only be completed by reading and copying from the
    context, which teaches those as skills instead of memorised facts of the training
    entities. skill_questions: questions drawn from each skill world, single-hop and
    two-hop. skill_shots: exemplars in those documents (0: the format is already known
    from the main documents, and short documents are cheap).
  """
  shots: int = 1
  passage_repeats: int = 30
  qa_repeats: int = 3
  skill_worlds: int = 40
  skill_questions: tuple[int, int] = (200, 50)
  skill_shots: int = 0


_FORMATS = {  # what each kind of QA document teaches, by hop count
    "main": {1: ("direct", "answer", "chain_of_thought", "recite", "hint"),
             2: ("direct", "answer", "chain_of_thought", "multi_recite")},
    "skill": {1: ("answer", "hint"), 2: ("answer",)},
}


def _qa_documents(world: EncyclopediaWorld, qas: list[QAPair], formats: tuple[str, ...],
                  shots: int, rng: np.random.Generator) -> list[str]:
  exemplars = [exemplar_for(world, q) for q in qas]
  docs = []
  for index, target in enumerate(exemplars):
    def pick() -> list[prompt_lib.Exemplar]:
      choice = rng.choice(len(exemplars) - 1, shots, replace=False)
      return [exemplars[i + (i >= index)] for i in choice]  # never the target itself
    for name in formats:
      if name == "direct":
        docs.append(_complete(prompt_lib.direct_prompt(pick(), target.question), target.answer))
      elif name == "answer":
        docs.append(_complete(prompt_lib.answer_prompt(pick(), target.passages, target.question),
                              target.answer))
      elif name == "chain_of_thought":
        docs.append(_complete(prompt_lib.chain_of_thought_prompt(pick(), target.question),
                              f"{target.reasoning}\nAnswer: {target.answer}"))
      elif name == "recite":
        docs.append(_complete(prompt_lib.recite_prompt(pick(), target.question),
                              target.passages[0]))
      elif name == "hint":
        docs.append(_complete(prompt_lib.hint_prompt(pick(), target.question), target.hints[0]))
      elif name == "multi_recite":
        docs.append(_complete(prompt_lib.multi_recite_prompt(pick(), target.question),
                              "\n".join([target.passages[0]] + [
                                  f"Recitation {i + 1}: {p}"
                                  for i, p in enumerate(target.passages) if i > 0])))
      else:
        raise ValueError(f"unknown document format {name!r}")
  return docs


def passage_documents(world: EncyclopediaWorld) -> list[str]:
  """'Hint: title — section — paragraph #k / Recitation: passage' for every paragraph."""
  return [_complete(prompt_lib.passage_prompt([], passage_hint(t, s, k)), text)
          for t, s, k, text in world.paragraphs()]


def training_documents(world: EncyclopediaWorld, corpus: CorpusConfig, rng: np.random.Generator
                       ) -> list[str]:
  """Passages of every entity, few-shot QA documents of the training entities in every
  prompt format, and reading / hint documents of the skill worlds, shuffled."""
  docs = passage_documents(world) * corpus.passage_repeats
  for _ in range(corpus.qa_repeats):
    for hops, formats in _FORMATS["main"].items():
      docs += _qa_documents(world, world.qa(split="train", hops=hops), formats, corpus.shots,
                            rng)
  for i in range(corpus.skill_worlds):
    other = skill_world(world, i)
    for hops, formats in _FORMATS["skill"].items():
      pool = other.qa(hops=hops, variant=0)
      chosen = [pool[j] for j in sorted(rng.permutation(len(pool))[
          :corpus.skill_questions[hops - 1]])]
      docs += _qa_documents(other, chosen, formats, corpus.skill_shots, rng)
  return [docs[i] for i in rng.permutation(len(docs))]


def skill_world(world: EncyclopediaWorld, index: int) -> EncyclopediaWorld:
  """The index-th skill world: the same design, another seed, so other names."""
  return build_world(dataclasses.replace(world.config, seed=world.config.seed + 1000 + index))


@dataclasses.dataclass(frozen=True)
class HintDataConfig:
  """Hint fine-tuning data: `questions_per_passage` questions the pretrained model writes
  (sampled) for every paragraph, each made a question -> hint -> passage example, mixed
  with `replay` pretraining documents per example (so the other formats stay)."""
  questions_per_passage: int = 2
  replay: float = 1.0


@dataclasses.dataclass(frozen=True)
class WorldEvalConfig:
  """How the held-out evaluation runs.

  path_counts: numbers of voting paths EM is reported at; the largest is sampled per
    question, the others vote on `resamples` random subsets of those paths.
  max_questions: held-out questions per hop count. batch_size: the samplers' batch size.
  """
  path_counts: tuple[int, ...] = (1, 5, 20)
  resamples: int = 5
  max_questions: int = 100          # per hop count, held-out, first wording only
  batch_size: int = 64


def _seed_world(config: EncyclopediaConfig, seed: int) -> EncyclopediaWorld:
  return build_world(dataclasses.replace(config, seed=seed))


def _exemplars(world: EncyclopediaWorld, hops: int, shots: int, seed: int
               ) -> list[prompt_lib.Exemplar]:
  """The evaluation's few-shot exemplars: training-entity questions, one wording each."""
  pool = world.qa(split="train", hops=hops, variant=0)
  rng = np.random.default_rng([seed, hops])
  return [exemplar_for(world, pool[i]) for i in rng.choice(len(pool), shots, replace=False)]


def _sampler(run_dir: str, model: TransformerConfig, vocabulary: str,
             settings: WorldEvalConfig, mesh, rules) -> Sampler:
  """A sampler over the parameters a training stage left in run_dir."""
  run = load_run(run_dir, config=model, vocabulary=vocabulary, mesh=mesh, rules=rules)
  return run.sampler(batch_size=settings.batch_size, length_buckets=(128, 256, 384, 512))


def world_stage(config: EncyclopediaConfig, corpus: CorpusConfig, seed: int):
  """The seed's world: its pretraining documents (also the vocabulary corpus) and stats."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    paths = write_documents(stage_dir, world, corpus, seed)
    return {"dir": stage_dir, "stats": world.stats(), **paths}
  return run


def hint_data_stage(config: EncyclopediaConfig, corpus: CorpusConfig, hint_data: HintDataConfig,
                    model: TransformerConfig, recite: ReciteConfig, settings: WorldEvalConfig,
                    mesh_fn, rules, seed: int):
  """Questions written by the pretrained model for every paragraph -> fine-tuning data."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    exemplars = _exemplars(world, 1, corpus.shots, seed)
    reciter = Reciter(_sampler(results["pretrain"]["workdir"], model,
                               results["vocabulary"]["model"], settings, mesh_fn(), rules),
                      exemplars, recite)
    paragraphs = list(world.paragraphs())
    questions = reciter.generate_questions([p[3] for p in paragraphs],
                                           jax.random.key(seed + 7),
                                           hint_data.questions_per_passage)
    pool = [exemplar_for(world, q) for q in world.qa(split="train", hops=1)]
    rng = np.random.default_rng([seed, 9])
    examples, generated = [], []
    for (title, section, k, text), asked in zip(paragraphs, questions):
      for question in asked:
        shots = [pool[i] for i in rng.choice(len(pool), corpus.shots, replace=False)]
        examples.append(prompt_lib.hinted_recitation_document(
            shots, question, passage_hint(title, section, k), text))
        generated.append({"hint": passage_hint(title, section, k), "passage": text,
                          "question": question, "names_title": title in question})
    if not examples:
      raise ValueError(f"the pretrained model ({results['pretrain']['workdir']}) wrote no "
                       "question for any paragraph; pretrain it longer")
    replay = [r["text"] for r in read_jsonl(results["world"]["pretrain"])]
    replay = [replay[i] for i in rng.permutation(len(replay))[
        :int(round(hint_data.replay * len(examples)))]]
    docs = examples + replay
    path = fs.join(stage_dir, "hint_finetune.jsonl")
    if is_writer() and not fs.exists(path):
      write_jsonl(path, [{"text": docs[i]} for i in rng.permutation(len(docs))])
      write_jsonl(fs.join(stage_dir, "questions.jsonl"), generated)
    return {"hint_finetune": path, "examples": len(examples), "replay": len(replay),
            "names_title": float(np.mean([g["names_title"] for g in generated]))
            if generated else 0.0}
  return run


def _diagnostics(reciter: Reciter, world: EncyclopediaWorld, questions: list[QAPair],
                 hinted: bool) -> dict[str, float]:
  """Where recitation can fail, on the evaluation's single-hop questions: the passage
  recalled from its gold hint (memorisation), the gold hint written for the question
  (greedy; after hint fine-tuning in the hinted format), the answer read from the gold
  passage (reading)."""
  exemplars = [exemplar_for(world, q) for q in questions]
  passages = reciter.greedy([prompt_lib.passage_prompt([], e.hints[0]) for e in exemplars],
                            reciter.config.recitation_tokens, reciter.config.recitation_stop)
  hint_prompt = ((lambda q: prompt_lib.hinted_recite_prompt(reciter.exemplars, q)) if hinted
                 else (lambda q: prompt_lib.hint_prompt(reciter.exemplars, q)))
  hints = reciter.greedy([hint_prompt(q.question) for q in questions],
                         reciter.config.hint_tokens)
  answers = reciter.greedy([prompt_lib.answer_prompt(reciter.exemplars, e.passages, q.question)
                            for e, q in zip(exemplars, questions)], reciter.config.answer_tokens)
  return {
      "passage recalled from its hint": float(np.mean(
          [p.strip() == e.passages[0] for p, e in zip(passages, exemplars)])),
      "gold hint written": float(np.mean(
          [h.strip() == e.hints[0] for h, e in zip(hints, exemplars)])),
      "answer read from the gold passage": float(np.mean(
          [world.judge(q, prompt_lib.clean_answer(a)) for a, q in zip(answers, questions)])),
  }


# (label, model stage, hops, Reciter method, uses the path count)
EVAL_METHODS = (
    ("direct", "pretrain", 1, "direct", False),
    ("chain_of_thought", "pretrain", 1, "chain_of_thought", False),
    ("recite", "pretrain", 1, "recite_and_answer", True),
    ("diversified", "pretrain", 1, "diversified", False),
    ("hint-FT direct", "hint_finetune", 1, "direct", False),
    ("hint-FT recite", "hint_finetune", 1, "hinted_recite_and_answer", True),
    ("direct", "pretrain", 2, "direct", False),
    ("chain_of_thought", "pretrain", 2, "chain_of_thought", False),
    ("multi_recite", "pretrain", 2, "multi_recite_and_answer", True),
)


def eval_stage(config: EncyclopediaConfig, corpus: CorpusConfig, model: TransformerConfig,
               recite: ReciteConfig, settings: WorldEvalConfig, mesh_fn, rules, seed: int):
  """Every method on held-out questions (first wording), per hop count."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    mesh = mesh_fn()
    most = max(settings.path_counts)
    rows, analyses, curves, diagnostics = [], {}, {}, {}
    samplers: dict[str, Sampler] = {}  # one per model: loaded and compiled once
    reciters: dict[tuple[str, int], Reciter] = {}
    questions = {hops: [q for q in world.qa(split="heldout", hops=hops, variant=0)
                        ][:settings.max_questions] for hops in (1, 2)}
    for label, stage, hops, method, with_paths in EVAL_METHODS:
      if stage not in samplers:
        samplers[stage] = _sampler(results[stage]["workdir"], model,
                                   results["vocabulary"]["model"], settings, mesh, rules)
      if (stage, hops) not in reciters:
        reciters[stage, hops] = Reciter(samplers[stage],
                                        _exemplars(world, hops, corpus.shots, seed), recite)
      reciter = reciters[stage, hops]
      if hops == 1 and stage not in diagnostics:
        diagnostics[stage] = _diagnostics(reciter, world, questions[1],
                                          hinted=stage == "hint_finetune")
      records = [{"question": q.question, "answers": list(q.answers), "hops": hops}
                 for q in questions[hops]]
      run_method = getattr(reciter, method)
      if with_paths:
        out = run_method(records, jax.random.key(seed), most)
      elif method == "diversified":
        out = run_method(records, jax.random.key(seed + 1))
      else:
        out = run_method(records)
      name = f"{label} ({most} paths)" if with_paths else label
      path = fs.join(stage_dir, f"{label.replace(' ', '_')}_{hops}hop.jsonl")
      if is_writer() and not fs.exists(path):
        write_jsonl(path, [r.to_dict() for r in out])
      rows.append({"method": name, "hops": hops, **analysis.scores(out)})
      if out and any(p.recitations for r in out for p in r.paths):
        analyses[f"{name} / {hops}-hop"] = {**analysis.error_analysis(out),
                                            **analysis.path_table(out)}
      if with_paths:
        curves[f"{label} / {hops}-hop"] = analysis.em_by_paths(
            out, settings.path_counts, settings.resamples, seed)
      print(f"[align_jax] seed {seed} {name} {hops}-hop: EM {rows[-1]['em']:.3f}", flush=True)
    return {"rows": rows, "analysis": analyses, "em_by_paths": curves,
            "diagnostics": diagnostics}
  return run


def write_documents(directory: str, world: EncyclopediaWorld, corpus: CorpusConfig, seed: int
                    ) -> dict[str, str]:
  """pretrain.jsonl: the documents, which the vocabulary is also trained on."""
  path = fs.join(directory, "pretrain.jsonl")
  if is_writer() and not fs.exists(path):
    write_jsonl(path, [{"text": d} for d in training_documents(
        world, corpus, np.random.default_rng(seed))])
  return {"pretrain": path, "vocab_corpus": path}


def seed_pipeline(workdir: str, model: TransformerConfig, world: EncyclopediaConfig,
                  corpus: CorpusConfig, pretrain: TrainingSchedule, hint_data: HintDataConfig,
                  hint_finetune: TrainingSchedule, vocab_size: int, recite: ReciteConfig,
                  settings: WorldEvalConfig, mesh_fn, rules, seed: int) -> dict[str, Any]:
  """Runs one seed's stages, world to eval, in `workdir` and returns their results."""
  common = {"model": config_record(model), "seed": seed}
  stages = [
      Stage("world", world_stage(world, corpus, seed),
            {"world": config_record(world), "corpus": config_record(corpus), "seed": seed}),
      Stage("vocabulary", vocabulary_stage(vocab_size, **NEWLINE_VOCABULARY),
            {"vocab_size": vocab_size}),
      Stage("pretrain", training_stage(model, pretrain, "lm", "pretrain", None, "plain", mesh_fn,
                                       rules, seed), {**common, "schedule": config_record(pretrain)}),
      Stage("hint_data", hint_data_stage(world, corpus, hint_data, model, recite, settings,
                                         mesh_fn, rules, seed),
            {**common, "hint_data": config_record(hint_data), "recite": config_record(recite)}),
      Stage("hint_finetune", training_stage(model, hint_finetune, "lm", "hint_finetune",
                                            "pretrain", "plain", mesh_fn, rules, seed,
                                            data_stage="hint_data"),
            {**common, "schedule": config_record(hint_finetune)}),
      Stage("eval", eval_stage(world, corpus, model, recite, settings, mesh_fn, rules, seed),
            {**common, "recite": config_record(recite), "settings": config_record(settings)}),
  ]
  return Pipeline(workdir, stages).run()


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]],
                       seconds: float, path_counts: Sequence[int]) -> str:
  """report.md: EM/F1 per method across seeds, the error analysis, EM by paths (PNG),
  the diagnostics of memorisation / hints / reading, training curves, stage times."""
  figures = fs.join(workdir, "report")
  fs.makedirs(figures)
  seeds = list(per_seed)
  table = []
  for row in per_seed[seeds[0]]["eval"]["rows"]:
    same = [next(r for r in per_seed[s]["eval"]["rows"]
                 if (r["method"], r["hops"]) == (row["method"], row["hops"])) for s in seeds]
    table.append({"hops": row["hops"], "method": row["method"], "n": row["n"],
                  "EM (mean ± std)": mean_std([r["em"] for r in same]),
                  "F1 (mean ± std)": mean_std([r["f1"] for r in same]),
                  **{f"EM seed {s}": r["em"] for s, r in zip(seeds, same)}})

  def em(seed, method, hops):
    return next(r["em"] for r in per_seed[seed]["eval"]["rows"]
                if r["method"] == method and r["hops"] == hops)
  most = max(path_counts)
  times = []
  for s in seeds:
    seed_dir = fs.dirname(per_seed[s]["world"]["dir"])
    record = {"seed": s}
    stage_times = stage_seconds(seed_dir, ("world", "vocabulary", "pretrain", "hint_data",
                                           "hint_finetune", "eval"))
    record.update({name: round(value, 1) for name, value in stage_times.items()})
    record["total"] = round(sum(v for k, v in record.items() if k != "seed"), 1)
    times.append(record)
  paths = f"({most} paths)"
  gains = [
      (f"recite {paths} minus direct answering (pretrained model), single-hop",
       [em(s, f"recite {paths}", 1) - em(s, "direct", 1) for s in seeds]),
      ("diversified recitation minus direct answering (pretrained model), single-hop",
       [em(s, "diversified", 1) - em(s, "direct", 1) for s in seeds]),
      (f"hint-fine-tuned recite {paths} minus the pretrained model's direct answer, single-hop",
       [em(s, f"hint-FT recite {paths}", 1) - em(s, "direct", 1) for s in seeds]),
      (f"hint-fine-tuned recite {paths} minus the same model's direct answer, single-hop",
       [em(s, f"hint-FT recite {paths}", 1) - em(s, "hint-FT direct", 1) for s in seeds]),
      (f"multi_recite {paths} minus direct answering (pretrained model), two-hop",
       [em(s, f"multi_recite {paths}", 2) - em(s, "direct", 2) for s in seeds]),
  ]
  headline = "EM differences on held-out entities (mean ± std over seeds):\n\n" + "\n".join(
      f"- {text}: {mean_std(values)}" for text, values in gains)

  analysis_rows = []
  for key in per_seed[seeds[0]]["eval"]["analysis"]:
    shares = {c: [per_seed[s]["eval"]["analysis"][key][c] for s in seeds]
              for c in per_seed[seeds[0]]["eval"]["analysis"][key]}
    entry = {"method": key, **{c: float(np.mean(v)) for c, v in shares.items()}}
    entry["sum of classes"] = sum(entry[c] for c in analysis.ERROR_CLASSES)
    analysis_rows.append(entry)
  lines = []
  for key in per_seed[seeds[0]]["eval"]["em_by_paths"]:
    points = [per_seed[s]["eval"]["em_by_paths"][key] for s in seeds]
    means = np.mean([[p["em_mean"] for p in ps] for ps in points], axis=0)
    stds = np.std([[p["em_mean"] for p in ps] for ps in points], axis=0)
    lines.append((key, [p["paths"] for p in points[0]], list(means), list(stds)))
  baselines = [(f"baseline: direct / {hops}-hop", list(path_counts),
                [float(np.mean([em(s, "direct", hops) for s in seeds]))] * len(path_counts),
                None) for hops in (1, 2)]
  plot_lines(fs.join(figures, "em_by_paths.png"), lines + baselines,
             "EM on held-out entities by number of paths (mean ± std over seeds)",
             "recitation paths", "exact match", logx=True, xticks=path_counts)
  curves_rows = [{"method": label, **{f"{x} paths": f"{m:.3f} ± {e:.3f}"
                                      for x, m, e in zip(xs, ms, es)}}
                 for label, xs, ms, es in lines]
  diag_rows = [{"model": stage, **{k: mean_std([per_seed[s]["eval"]["diagnostics"][stage][k]
                                                 for s in seeds]) for k in values}}
               for stage, values in per_seed[seeds[0]]["eval"]["diagnostics"].items()]
  plot_curves(fs.join(figures, "loss.png"),
              [(fs.join(per_seed[s][stage]["workdir"], "metrics.jsonl"), "loss",
                f"seed {s} {stage}") for s in seeds for stage in ("pretrain", "hint_finetune")],
              "Training loss", "loss", logy=True)
  seed0 = per_seed[seeds[0]]
  setup = {"world": seed0["world"]["stats"],
           "hint fine-tuning examples": seed0["hint_data"]["examples"],
           "replayed pretraining documents": seed0["hint_data"]["replay"],
           "generated questions naming the passage's title": seed0["hint_data"]["names_title"]}
  method_columns = ["hops", "method", "n", "EM (mean ± std)", "F1 (mean ± std)"] + [
      f"EM seed {s}" for s in seeds]
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax RECITE on the encyclopedia world", [
      ("What ran", "Per seed: an encyclopedia world (that seed's entities), a tiny model "
                   "pretrained from scratch on every paragraph under its passage hint, few-shot "
                   "QA documents of the training entities in every prompt format, and reading / "
                   "hint documents of other worlds; then hint fine-tuning on questions the "
                   "model wrote itself for every paragraph. All questions below are about "
                   "held-out entities, whose facts the model saw only in their paragraphs."),
      ("Headline", headline + "\n\nWall time per seed (all stages): "
       + ", ".join(f"seed {t['seed']} {t['total']:.0f} s" for t in times)
       + f"; this invocation {seconds:.0f} s."),
      ("Exact match and F1 on held-out entities", markdown_table(table, method_columns)),
      ("EM by number of recitation paths", "![EM by paths](report/em_by_paths.png)\n\n"
       + markdown_table(curves_rows, ["method"] + [f"{k} paths" for k in path_counts])),
      ("Error analysis (share of questions; mean over seeds)", markdown_table(
          analysis_rows, ["method", *analysis.ERROR_CLASSES, "sum of classes"])),
      ("Per-path table (share of paths; mean over seeds)", markdown_table(
          analysis_rows, ["method"] + [f"recited={r},correct={c}" for r in (True, False)
                                       for c in (True, False)])),
      ("Where recitation can fail (single-hop, held-out)", markdown_table(
          diag_rows, ["model", "passage recalled from its hint", "gold hint written",
                      "answer read from the gold passage"])),
      ("Training loss", "![training loss](report/loss.png)"),
      ("Stage seconds", markdown_table(times, list(times[0]))),
      ("Set-up (first seed)", "```\n" + json.dumps(setup, indent=2) + "\n```"),
  ])


def recite_world(workdir: str, model: TransformerConfig,
                 world: EncyclopediaConfig = EncyclopediaConfig(),
                 corpus: CorpusConfig = CorpusConfig(),
                 pretrain: TrainingSchedule = TrainingSchedule(steps=700, learning_rate=3e-3),
                 hint_data: HintDataConfig = HintDataConfig(),
                 hint_finetune: TrainingSchedule = TrainingSchedule(steps=150,
                                                                    learning_rate=1e-3),
                 vocab_size: int = 1024,
                 recite: ReciteConfig = ReciteConfig(recitation_tokens=64,
                                                     recitation_stop="\n", passage_shots=0),
                 settings: WorldEvalConfig = WorldEvalConfig(), seeds: Sequence[int] = (0,),
                 mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the experiment for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md."""
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(
          seed_dir, model, world, corpus, pretrain, hint_data, hint_finetune, vocab_size,
          recite, settings, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, seconds,
                                                   settings.path_counts),
      lambda results: results["eval"]["rows"], ["method", "hops", "n", "em", "f1"])
