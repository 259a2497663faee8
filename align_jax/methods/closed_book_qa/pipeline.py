"""Closed-book QA on the encyclopedia world, end to end on a CPU.

Stages (each in WORKDIR/<stage>/, resumable, see `align_jax.pipeline`):
  world       build the seeded encyclopedia; write articles, QA splits and training files
  vocabulary  train a sentencepiece vocabulary on the world's text
  pretrain    train a tiny model from scratch on the articles (plus training-entity QA)
  sft         fine-tune it on training-entity QA with the chat template
  eval        greedy closed-book answers for training and held-out entities, EM/F1
  report      report.md with loss curves (PNG) and the numbers
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data import encode_prompt
from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.data.vocab import load_vocabulary
from align_jax.eval.qa import exact_match, f1
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, stage_seconds,
                                trained_run, training_stage, vocabulary_stage)
from align_jax.pipeline.reports import markdown_table, plot_curves, write_report
from align_jax.sampling import Sampler, SamplingConfig
from align_jax.training.checkpoints import config_record
from align_jax.worlds import EncyclopediaConfig, build_world, passage_hint
from align_jax.worlds.encyclopedia import WORLD_CONVENTION


def _files_exist(directory: str, names) -> bool:
  return all(fs.exists(fs.join(directory, n)) for n in names)


def world_stage(world_config: EncyclopediaConfig, chat_template: str, qa_in_pretraining: bool):
  """Writes the world's articles and QA splits, and the pretraining, SFT and vocabulary
  corpora made from them."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = build_world(world_config)
    names = ("articles.jsonl", "qa_train.jsonl", "qa_heldout.jsonl")
    if is_writer() and not _files_exist(stage_dir, names):
      # The world is deterministic: write it aside, then add only the files still missing
      # (an interrupted earlier attempt may have left some of them).
      staging = fs.join(stage_dir, "staging")
      if fs.exists(staging):
        fs.rmtree(staging)
      world.to_jsonl(staging)
      for name in names:
        if not fs.exists(fs.join(stage_dir, name)):
          fs.replace(fs.join(staging, name), fs.join(stage_dir, name))
      fs.rmtree(staging)
    template = get_template(chat_template)
    train_qa = world.qa(split="train")

    def qa_text(qa):
      return template.render_text([{"role": "user", "content": qa.question},
                                   {"role": "assistant", "content": qa.answers[0]}])

    # Pretraining documents are paragraphs headed by their passage hint, so each fits a
    # short sequence and a model can later be asked to recite a passage by its hint.
    passages = [{"text": f"{passage_hint(title, section, k)}\n{text}"}
                for title, section, k, text in world.paragraphs()]
    files = {
        "pretrain.jsonl": passages + ([{"text": qa_text(q)} for q in train_qa]
                                      if qa_in_pretraining else []),
        "sft.jsonl": [{"prompt": q.question, "response": q.answers[0]} for q in train_qa],
        "vocab_corpus.jsonl": ([{"text": t} for t in world.corpus_texts()]
                               + [{"text": qa_text(q)} for q in world.qa()]),
    }
    for name, records in files.items():
      if is_writer() and not fs.exists(fs.join(stage_dir, name)):
        write_jsonl(fs.join(stage_dir, name), records)
    return {"dir": stage_dir, "stats": world.stats(),
            **{name.split(".")[0]: fs.join(stage_dir, name) for name in files}}
  return run


def answer_questions(sampler: Sampler, vocab, template, questions, max_new_tokens: int
                     ) -> list[str]:
  """Greedy closed-book answers, cut at the end of the first line."""
  prompts = [encode_prompt(vocab, q, chat_template=template) for q in questions]
  result = sampler.generate(prompts, SamplingConfig(max_new_tokens=max_new_tokens,
                                                    temperature=0, stop_strings=("\n",)),
                            jax.random.key(0))
  return [texts[0].strip() for texts in result.texts]


def eval_stage(model: TransformerConfig, chat_template: str, stages: tuple[str, ...],
               max_examples: int, max_new_tokens: int, mesh_fn, rules):
  """Closed-book EM/F1 of each stage's model on training and held-out questions (first
  wording), per hop count."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world_dir = results["world"]["dir"]
    vocab = load_vocabulary(results["vocabulary"]["model"])
    template = get_template(chat_template)
    mesh = mesh_fn()
    rows = []
    for stage in stages:
      sampler = trained_run(results, stage, model, mesh, rules).sampler(
          batch_size=64, length_buckets=(32, 64))
      for split in ("train", "heldout"):
        records = [r for r in read_jsonl(fs.join(world_dir, f"qa_{split}.jsonl"))
                   if r.get("variant", 0) == 0]
        # Up to half of the examples from each hop count, in file order.
        records = [r for hops in (1, 2)
                   for r in [x for x in records if x["hops"] == hops][:max_examples // 2]]
        predictions = answer_questions(sampler, vocab, template,
                                       [r["question"] for r in records], max_new_tokens)
        out_path = fs.join(stage_dir, f"{stage}_{split}.jsonl")
        if is_writer() and not fs.exists(out_path):
          write_jsonl(out_path, [{**r, "prediction": p,
                                  "em": exact_match(p, r["answers"], WORLD_CONVENTION)}
                                 for r, p in zip(records, predictions)])
        for hops in (1, 2):
          chosen = [(r, p) for r, p in zip(records, predictions) if r["hops"] == hops]
          if not chosen:
            continue
          rows.append({"model": stage, "split": split, "hops": hops, "n": len(chosen),
                       "em": float(np.mean([exact_match(p, r["answers"], WORLD_CONVENTION)
                                            for r, p in chosen])),
                       "f1": float(np.mean([f1(p, r["answers"], WORLD_CONVENTION)
                                            for r, p in chosen]))})
    return {"rows": rows}
  return run


def report_stage(title: str, started: float):
  """report.md: training-loss curves (PNG), the EM/F1 table, the world's stats, stage times."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    series = [(fs.join(results[s]["workdir"], "metrics.jsonl"), "loss", s)
              for s in ("pretrain", "sft") if s in results]
    plot_curves(fs.join(stage_dir, "loss.png"), series, "Training loss", "loss", logy=True)
    table = markdown_table(results["eval"]["rows"], ["model", "split", "hops", "n", "em", "f1"])
    stats = results["world"]["stats"]
    seconds = stage_seconds(fs.dirname(stage_dir),
                            ("world", "vocabulary", "pretrain", "sft", "eval"))
    timing = markdown_table([{"stage": k, "seconds": round(v, 1)} for k, v in seconds.items()],
                            ["stage", "seconds"])
    path = write_report(fs.join(fs.dirname(stage_dir), "report.md"), title, [
        ("What ran", "A tiny model was pretrained from scratch on the encyclopedia world's "
                     "paragraphs (each headed by its passage hint) and the QA pairs of training "
                     "entities, fine-tuned on training-"
                     "entity QA, and asked closed-book questions about training and held-out "
                     "entities. Held-out facts appear only in the articles."),
        ("World", "```\n" + json.dumps(stats, indent=2) + "\n```"),
        ("Training loss", "![training loss](report/loss.png)"),
        ("Closed-book exact match", table),
        ("Stage times", timing),
    ])
    return {"report": path}
  return run


def encyclopedia_qa(workdir: str, model: TransformerConfig,
                    world: EncyclopediaConfig = EncyclopediaConfig(),
                    pretrain: TrainingSchedule = TrainingSchedule(),
                    sft: TrainingSchedule = TrainingSchedule(steps=150, learning_rate=3e-4),
                    vocab_size: int = 512, chat_template: str = "plain",
                    qa_in_pretraining: bool = True, eval_examples: int = 200,
                    answer_tokens: int = 16, mesh: Mesh | None = None,
                    rules: LogicalRules = DEFAULT_RULES, seed: int = 0) -> dict[str, Any]:
  """Runs the closed-book QA pipeline in WORKDIR and returns every stage's result."""
  started = time.perf_counter()
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  settings = {"model": config_record(model), "seed": seed, "chat_template": chat_template}
  stages = [
      Stage("world", world_stage(world, chat_template, qa_in_pretraining),
            {"world": config_record(world), "qa_in_pretraining": qa_in_pretraining,
             "chat_template": chat_template}),
      Stage("vocabulary", vocabulary_stage(vocab_size), {"vocab_size": vocab_size}),
      Stage("pretrain", training_stage(model, pretrain, "lm", "pretrain", None, chat_template,
                                       mesh_fn, rules, seed),
            {**settings, "schedule": config_record(pretrain)}),
      Stage("sft", training_stage(model, sft, "sft", "sft", "pretrain", chat_template, mesh_fn,
                                  rules, seed), {**settings, "schedule": config_record(sft)}),
      Stage("eval", eval_stage(model, chat_template, ("pretrain", "sft"), eval_examples,
                               answer_tokens, mesh_fn, rules),
            {**settings, "examples": eval_examples}),
      Stage("report", report_stage("align_jax closed-book QA on the encyclopedia "
                                   "world", started)),
  ]
  results = Pipeline(workdir, stages).run()
  print(markdown_table(results["eval"]["rows"], ["model", "split", "hops", "n", "em", "f1"]))
  print(f"[align_jax] report: {results['report']['report']} "
        f"({time.perf_counter() - started:.0f}s)")
  return results
