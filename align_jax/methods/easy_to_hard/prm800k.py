"""Easy-to-Hard on real data: SFT and a PRM on the easy levels of PRM800K / MATH, then
reranking on MATH500, with an imported Hugging Face model.

Stages (in WORKDIR/<stage>/, resumable, see `align_jax.pipeline`):
  data     PRM800K labels with MATH levels attached, the easy levels kept: process
           records for the PRM (a held-out tenth of the problems for its evaluation);
           supervised solutions from PRM800K's all-positive trajectories and MATH's own
           solutions of the easy levels; MATH500 questions for evaluation; the number of
           evaluation problems that also appear in training data
  sft      the base model fine-tuned on the easy supervised solutions
  prm      a process reward model on the easy step labels (backbone from the SFT run)
  samples  N samples per MATH500 question from the SFT policy, judged by the final
           answer (`answers_equal` against MATH500's answer)
  rerank   majority, weighted majority and best-of-N with the PRM's step scores, per
           level group, for N = 1, 2, 4, ...
The prompt of a question is the question itself under the chat template (None: the
question in the paper's layout, `# Question` / `# Solution` headers, for a base model).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.eval.math import answers_equal, extract_answer, normalize_answer
from align_jax.methods.easy_to_hard import data as datasets
from align_jax.methods.easy_to_hard.pipeline import (RerankConfig, _write, rerank_curves,
                                                     score_samples, solution_scores, strategies)
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import Pipeline, Stage, TrainingSchedule
from align_jax.pipeline.generation import generate_to_jsonl, prompt_renderer
from align_jax.pipeline.reports import markdown_table, write_report
from align_jax.rewards import ProcessRewardModel
from align_jax.sampling import SamplingConfig
from align_jax.training import train_lm, train_reward_model
from align_jax.training.checkpoints import config_record
from align_jax.training.runs import load_run, model_for

PAPER_LAYOUT = "# Question\n\n{problem}\n\n# Solution\n\n"


@dataclasses.dataclass(frozen=True)
class RealDataConfig:
  """The files (local or gs://) and what is kept of them.

  math_train: a MATH train split (release folder or jsonl), for levels and solutions;
  prm800k: PRM800K label files (phase 1 and/or 2); math500: the evaluation questions.
  easy_levels: the levels trained on; eval_limit: the first this many MATH500 questions
  (None: all); heldout: the share of PRM problems kept for the PRM's evaluation.
  """
  math_train: str = ""
  prm800k: tuple[str, ...] = ()
  math500: str = ""
  easy_levels: tuple[int, ...] = (1, 2, 3)
  eval_limit: int | None = None
  heldout: float = 0.1

  def __post_init__(self):
    missing = [name for name in ("math_train", "prm800k", "math500") if not getattr(self, name)]
    if missing:
      raise ValueError(f"RealDataConfig needs {', '.join(missing)} (paths to the local "
                       "MATH / PRM800K / MATH500 files)")


def _prompt(problem: str, chat_template: str | None) -> str:
  return problem if chat_template else PAPER_LAYOUT.format(problem=problem.strip())


def data_stage(config: RealDataConfig, chat_template: str | None, seed: int):
  """Writes the PRM, SFT and evaluation files and counts the overlap."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    del results
    math = datasets.read_math(config.math_train)
    prm, stats = [], {}
    for path in config.prm800k:
      records, counts = datasets.read_prm800k_with_stats(path)
      prm += records
      stats[fs.basename(path)] = counts
    prm = datasets.by_levels(datasets.attach_levels(prm, math), config.easy_levels)
    problems = sorted({r["prompt"] for r in prm})
    rng = np.random.default_rng(seed)
    heldout = set(rng.permutation(len(problems))[:max(1, int(len(problems) * config.heldout))]
                  .tolist())
    held_problems = {problems[i] for i in heldout}
    process = {"train": [], "eval": []}
    for r in prm:
      split = "eval" if r["prompt"] in held_problems else "train"
      process[split].append({"prompt": _prompt(r["prompt"], chat_template), "steps": r["steps"],
                             "labels": r["labels"]})
    sft = [{**r, "prompt": _prompt(r["prompt"], chat_template)}
           for r in datasets.prm800k_sft_records(prm)]
    sft += [{**datasets.math_sft_record(r), "prompt": _prompt(r["problem"], chat_template)}
            for r in datasets.by_levels(math, config.easy_levels)]
    evaluation = datasets.read_math500(config.math500)
    if config.eval_limit is not None:
      evaluation = evaluation[:config.eval_limit]
    questions = [{"prompt": _prompt(r["problem"], chat_template), "answer": r["answer"],
                  "level": r["level"], "id": r["id"]} for r in evaluation]
    if not process["train"] or not sft or not questions:
      raise ValueError(f"Easy-to-Hard data: {len(process['train'])} PRM records, {len(sft)} "
                       f"SFT records and {len(questions)} evaluation questions at levels "
                       f"{config.easy_levels}; each must be non-empty (check the files and "
                       "that MATH levels attach to the PRM800K problems)")
    paths = {"prm_train": _write(stage_dir, "prm_train.jsonl", process["train"]),
             "prm_eval": _write(stage_dir, "prm_eval.jsonl", process["eval"]),
             "sft": _write(stage_dir, "sft.jsonl", sft),
             "eval_prompts": _write(stage_dir, "eval_prompts.jsonl", questions)}
    trained = {r["prompt"] for r in sft} | {r["prompt"] for rows in process.values()
                                            for r in rows}
    return {**paths, "read": stats, "counts": {"prm_train": len(process["train"]),
                                               "prm_eval": len(process["eval"]),
                                               "sft": len(sft), "eval": len(questions)},
            "eval_questions_in_training": sum(q["prompt"] in trained for q in questions)}
  return run


def judge_math(record: Mapping[str, Any], text: str) -> dict[str, Any]:
  """A sample's extracted, normalised answer and whether it equals the record's."""
  answer = extract_answer(text)
  return {"text": text, "answer": normalize_answer(answer) if answer else None,
          "correct": answers_equal(answer, record["answer"])}


def easy_to_hard_prm800k(workdir: str, model: TransformerConfig, base_model: str,
                         data: RealDataConfig,
                         sft: TrainingSchedule = TrainingSchedule(steps=1000, learning_rate=2e-5,
                                                                  batch_size=64, seq_len=1024),
                         prm: TrainingSchedule = TrainingSchedule(steps=1000, learning_rate=2e-5,
                                                                  batch_size=64, seq_len=1024),
                         rerank: RerankConfig = RerankConfig(num_samples=64, temperature=0.7,
                                                             max_new_tokens=512),
                         chat_template: str | None = None, vocabulary: str | None = None,
                         sampler_batch_size: int = 64, seed: int = 0,
                         mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES
                         ) -> dict[str, Any]:
  """Runs the stages in WORKDIR and writes WORKDIR/report.md (see the module docstring).

  model: the runtime fields for the imported model (dtype, scan, remat; its shape is the
  checkpoint's); base_model: a Hugging Face directory; vocabulary: None for its own
  tokenizer.
  """
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  vocab = vocabulary or base_model
  settings = {"base_model": base_model, "seed": seed, "chat_template": chat_template,
              "model": config_record(model)}

  def sft_stage(stage_dir, results):
    config = sft.data("sft", (results["data"]["sft"],), chat_template=chat_template,
                      seed=seed, truncate="keep_response")
    summary = train_lm(stage_dir, model, config, vocab, sft.optimizer(), sft.loop(),
                       init_from=base_model, mesh=mesh_fn(), rules=rules, seed=seed)
    return {"workdir": stage_dir, "final_loss": summary["final_metrics"].get("loss")}

  def prm_stage(stage_dir, results):
    config = prm.data("process", (results["data"]["prm_train"],),
                      eval_files=((results["data"]["prm_eval"],)
                                  if results["data"]["counts"]["prm_eval"] else ()),
                      chat_template=chat_template, seed=seed, pack=False, eval_batches=4)
    summary = train_reward_model(stage_dir, model_for(results["sft"]["workdir"], model), config,
                                 vocab, prm.optimizer(), prm.loop(),
                                 init_from=results["sft"]["workdir"], mesh=mesh_fn(),
                                 rules=rules, seed=seed)
    return {"workdir": stage_dir, "eval_accuracy": summary["final_metrics"].get("eval/accuracy")}

  def samples_stage(stage_dir, results):
    policy = load_run(results["sft"]["workdir"], vocabulary=vocab, mesh=mesh_fn(), rules=rules)

    def judge(record, completions):
      return {**record, "samples": [judge_math(record, c["text"]) | {"tokens": len(c["tokens"])}
                                    for c in completions]}

    path = fs.join(stage_dir, "samples.jsonl")
    stats = generate_to_jsonl(
        path, list(read_jsonl(results["data"]["eval_prompts"])),
        prompt_renderer(policy.vocab, chat_template), policy.sampler(sampler_batch_size),
        SamplingConfig(max_new_tokens=rerank.max_new_tokens, temperature=rerank.temperature,
                       num_samples=rerank.num_samples), seed=seed + 400, chunk_size=16,
        postprocess=judge, desc="samples")
    return {"path": path, "generated_tokens": stats["generated_tokens"]}

  def rerank_stage(stage_dir, results):
    evaluator = ProcessRewardModel.load(results["prm"]["workdir"], vocabulary=vocab,
                                        mesh=mesh_fn(), rules=rules,
                                        chat_template=chat_template, batch_size=16)
    rows = list(read_jsonl(results["samples"]["path"]))
    scored = score_samples(rows, evaluator)
    with fs.open(fs.join(stage_dir, "scores.json"), "w") as f:
      json.dump(scored, f)
    scores = {f"prm/{how}": solution_scores(scored, "prm", how).reshape(len(rows), -1)
              for _, e, how in strategies(rerank) if e == "prm"}
    return rerank_curves(rows, scores, rerank, data.easy_levels, seed, evaluators=("prm",))

  stages = [
      Stage("data", data_stage(data, chat_template, seed),
            {"data": config_record(data), "chat_template": chat_template, "seed": seed}),
      Stage("sft", sft_stage, {**settings, "schedule": config_record(sft)}),
      Stage("prm", prm_stage, {**settings, "schedule": config_record(prm)}),
      Stage("samples", samples_stage, {**settings, "rerank": config_record(rerank)}),
      Stage("rerank", rerank_stage, {**settings, "rerank": config_record(rerank)}),
  ]
  results = Pipeline(workdir, stages).run()
  return {"report": write_real_report(workdir, results, rerank), "results": results}


def write_real_report(workdir: str, results: Mapping[str, Any], rerank: RerankConfig) -> str:
  """report.md: reranking accuracy per level group and N, and the data counts."""
  curves = results["rerank"]
  sections = []
  for group, entry in curves["groups"].items():
    rows = [{"strategy": name, **{f"N={n}": acc for n, acc in zip(curves["sizes"], values)}}
            for name, values in entry["accuracy"].items()]
    sections.append((f"Reranking, {group} levels ({entry['questions']} questions)",
                     markdown_table(rows, ["strategy"] + [f"N={n}" for n in curves["sizes"]])))
  sections.append(("Data", "```\n" + json.dumps(results["data"]["counts"], indent=2)
                   + f"\nevaluation questions also in training data: "
                   f"{results['data']['eval_questions_in_training']}\n```"))
  sections.append(("What ran", f"SFT and a PRM on levels 1-3; {rerank.num_samples} samples per "
                   f"MATH500 question at T={rerank.temperature}; PRM held-out step accuracy "
                   f"{results['prm'].get('eval_accuracy')}."))
  return write_report(fs.join(workdir, "report.md"), "align_jax Easy-to-Hard on PRM800K / MATH500",
                      sections)
