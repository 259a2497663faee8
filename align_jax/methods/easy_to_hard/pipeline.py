"""Easy-to-Hard on the leveled math world: evaluators trained on easy problems rerank and
reward hard ones.

Stages per seed (in WORKDIR/seed_<k>/<stage>/, resumable, see `align_jax.pipeline`):
  world         leveled problems (`align_jax.worlds.leveled_math`): gold step-by-step
                solutions of easy problems (levels 1-3) for SFT, easy questions for
                evaluator labels, RL questions of every level (hard ones with the answer
                "Unavailable"), held-out evaluation questions of every level
  vocabulary    a BPE sentencepiece vocabulary (digits split, newlines kept)
  sft, sft_large  two policy sizes trained from scratch on the easy gold solutions only
  label_samples the small policy's samples on the easy label questions, each step
                labelled by the exact checker (PRM800K style: the first wrong step and
                every later one negative) or, with `labels='monte_carlo'`, by rollouts
                (Math-Shepherd style: a step is positive when some of k completions
                from it reach the right answer)
  evaluator_data  process records (PRM), outcome records (ORM), both (OPRM), with a
                held-out tenth of the problems for evaluation
  prm, orm, oprm  the three evaluators with a scalar head (backbone from the small
                policy, or with `evaluator_backbone='sft_large'` from the large one: an
                evaluator larger than the policy whose samples it was trained on and
                reranks)
  iprm          an implicit process reward model: the same backbone's language model
                trained by DPO on pairs of a label question's right and wrong samples
                (outcome labels only); its step score is the implicit reward, beta times
                the log-ratio to the backbone, summed up to the step's end
  samples_small, samples_large  N samples per held-out question from each policy
  rerank        each evaluator scores every sample; majority, weighted majority and
                best-of-N accuracy for N = 1, 2, 4, ..., N (averaged over random subsets)
                at easy and hard levels, against samples and generated tokens
  ppo_outcome   PPO with the final-answer reward on easy RL questions only
  ppo_process   PPO on easy and hard RL questions: the final-answer reward on easy ones,
                0.25 on hard ones ("Unavailable"), plus the PRM's process reward
  ppo_implicit  the same with the implicit PRM's process reward
  ppo_oracle    (optional) PPO with the exact final-answer reward on every level's RL
                questions: what RL could gain here with a perfect evaluator
  rl_eval       greedy and sampled accuracy per level of SFT and the PPO policies, on the
                eval split or on test questions of its own
Then `report.md` in WORKDIR: per-level accuracy tables (mean ± std over seeds), the
goals with their margins in standard errors, and the curves as PNG.
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
from align_jax.eval.math import (answers_equal, extract_answer, join_steps, process_steps,
                                split_steps)
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, run_seeds,
                                trained_run, training_stage, vocabulary_stage)
from align_jax.pipeline.generation import generate_to_jsonl, prompt_renderer
from align_jax.ppo import PPOConfig, train_ppo
from align_jax.rewards import (AGGREGATIONS, CompositeReward, ProcessRewardTerm, aggregate,
                               load_process_model, math_answer_term, math_format_term)
from align_jax.sampling import SamplingConfig
from align_jax.sampling.voting import best_of_n, majority_vote, weighted_majority_vote
from align_jax.training import train_dpo, train_reward_model
from align_jax.training.checkpoints import config_record
from align_jax.worlds.leveled_math import (LeveledMathConfig, build_world, check_answer,
                                           check_steps, parse_question)

EVALUATORS = ("prm", "orm", "oprm", "iprm")
LABELS = ("checker", "monte_carlo")
AFTER_ERROR = ("negative", "drop")
BACKBONES = ("sft", "sft_large")
# The PPO stages with a process reward, and the evaluator whose reward each one reads.
PROCESS_PPO = {"ppo_process": "prm", "ppo_implicit": "iprm"}
# ppo_stage's prompts for the oracle run: every level's RL questions with their answers.
ORACLE_PROMPTS = "rl_prompts_with_answers"
# The world's files whose questions a policy or evaluator trains on (held-out ones: none).
TRAINING_FILES = ("sft", "label_prompts", "rl_prompts")


@dataclasses.dataclass(frozen=True)
class EvaluatorDataConfig:
  """How the evaluators' training data is made from the small policy's samples.

  samples: samples per label question (temperature 1); labels: 'checker' (exact step
  labels) or 'monte_carlo' (rollouts: `rollouts` completions from each step, positive
  when any reaches the answer); heldout: the share of label questions kept for the
  evaluators' evaluation; after_error: what a PRM record keeps after a solution's first
  wrong step: 'negative' (every later step, labelled wrong) or 'drop' (the record ends
  at the first wrong step, where PRM800K's labellers stopped).
  """
  samples: int = 4
  temperature: float = 1.0
  labels: str = "checker"
  rollouts: int = 4
  heldout: float = 0.1
  after_error: str = "negative"

  def __post_init__(self):
    if self.labels not in LABELS:
      raise ValueError(f"EvaluatorDataConfig.labels must be one of {LABELS}, got "
                       f"{self.labels!r}")
    if self.after_error not in AFTER_ERROR:
      raise ValueError(f"EvaluatorDataConfig.after_error must be one of {AFTER_ERROR}, got "
                       f"{self.after_error!r}")


@dataclasses.dataclass(frozen=True)
class RerankConfig:
  """Reranking: `num_samples` (N max, a power of 2) per held-out question at
  `temperature`; each N <= num_samples is measured on `subsets` random subsets
  (num_samples itself once); `aggregation` is the headline's step-score aggregation;
  `likelihood_samples`: how many of each question's samples (the first ones) the
  policies' likelihood diagnostic scores (None, or more than num_samples: all)."""
  num_samples: int = 64
  temperature: float = 0.7
  max_new_tokens: int = 96
  subsets: int = 16
  aggregation: str = "min"
  likelihood_samples: int | None = None

  def __post_init__(self):
    n = self.num_samples
    if n < 1 or n & (n - 1):
      raise ValueError(f"RerankConfig.num_samples must be a power of 2, got {n}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"RerankConfig.aggregation must be one of {AGGREGATIONS}, got "
                       f"{self.aggregation!r}")
    if self.likelihood_samples is not None and self.likelihood_samples < 1:
      raise ValueError(f"RerankConfig.likelihood_samples must be >= 1 or None, got "
                       f"{self.likelihood_samples}")

  @property
  def sizes(self) -> list[int]:
    return [2 ** k for k in range(int(np.log2(self.num_samples)) + 1)]


def _write(stage_dir: str, name: str, records: Sequence[Mapping[str, Any]]) -> str:
  path = fs.join(stage_dir, name)
  if is_writer() and not fs.exists(path):
    write_jsonl(path, records)
  return path


def world_stage(config: LeveledMathConfig, chat_template: str):
  """Writes the world's files and counts what held-out questions share with training."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    from align_jax.data.chat import get_template
    world = build_world(config)
    template = get_template(chat_template)
    sft = world.sft_records()
    rendered = [template.render_text([{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["response"]}])
                for r in sft]
    rl = world.rl_records()
    files = {
        "sft": sft,
        "label_prompts": world.records("label"),
        "rl_prompts": rl,
        "rl_easy_prompts": [r for r in rl if not r["hard"]],
        "eval_prompts": world.records("eval"),
        "vocab_corpus": [{"text": t} for t in world.texts() + rendered],
    }
    paths = {name: _write(stage_dir, name + ".jsonl", records) for name, records in files.items()}
    trained = {r["prompt"] for name in TRAINING_FILES for r in files[name]}
    return {**paths, "heldout_overlap": sum(r["prompt"] in trained
                                            for r in files["eval_prompts"]),
            "sizes": {name: len(records) for name, records in files.items()}}
  return run


def _judge(record: Mapping[str, Any], text: str) -> dict[str, Any]:
  problem = parse_question(record["prompt"], int(record["level"]))
  return {"text": text, "answer": extract_answer(text),
          "correct": check_answer(problem, text), "step_labels": check_steps(problem, text)}


def label_samples_stage(config: EvaluatorDataConfig, model: TransformerConfig,
                        chat_template: str, max_new_tokens: int, mesh_fn, rules, seed: int):
  """The small policy's samples on the label questions, judged by the checkers."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    policy = trained_run(results, "sft", model, mesh_fn(), rules)

    def judge(record, completions):
      return {**record, "samples": [{**_judge(record, c["text"]), "finished": c["finished"],
                                     "tokens": len(c["tokens"])} for c in completions]}

    path = fs.join(stage_dir, "samples.jsonl")
    stats = generate_to_jsonl(
        path, list(read_jsonl(results["world"]["label_prompts"])),
        prompt_renderer(policy.vocab, chat_template), policy.sampler(batch_size=256),
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=config.temperature,
                       num_samples=config.samples), seed=seed + 200, chunk_size=256,
        postprocess=judge, desc="label samples")
    rows = list(read_jsonl(path))
    correct = [s["correct"] for r in rows for s in r["samples"]]
    result = {"path": path, "sample_accuracy": float(np.mean(correct)),
              "generated_tokens": stats["generated_tokens"]}
    if config.labels == "monte_carlo":
      result["monte_carlo"] = monte_carlo_labels(
          fs.join(stage_dir, "monte_carlo.jsonl"), rows, policy, chat_template, config,
          max_new_tokens, seed + 300)
    return result
  return run


def monte_carlo_labels(path: str, rows: Sequence[Mapping[str, Any]], policy, chat_template: str,
                       config: EvaluatorDataConfig, max_new_tokens: int, seed: int
                       ) -> dict[str, Any]:
  """Math-Shepherd labels: for every sample and every step, `config.rollouts`
  completions from the solution up to and with that step; the step is positive when one
  of them reaches the right answer. Writes one row per (question, sample) with
  `mc_labels` and returns the agreement with the checker's labels."""
  from align_jax.data import encode_prompt
  from align_jax.data.chat import get_template
  from align_jax.eval.math import STEP_SEPARATOR
  template = get_template(chat_template)
  prefixes = []
  for i, row in enumerate(rows):
    for j, sample in enumerate(row["samples"]):
      steps = split_steps(sample["text"])
      for k in range(len(steps)):
        prefixes.append({"prompt": row["prompt"], "level": row["level"], "row": i,
                         "sample": j, "step": k, "num_steps": len(steps),
                         "prefix": STEP_SEPARATOR.join(steps[:k + 1])})
  vocab = policy.vocab

  def make_prompt(record):
    prefix = record["prefix"]
    tokens = encode_prompt(vocab, record["prompt"], chat_template=template)
    return tokens + [int(t) for t in vocab.encode(prefix + STEP_SEPARATOR)]

  def judge(record, completions):
    problem = parse_question(record["prompt"], int(record["level"]))
    whole = [record["prefix"] + STEP_SEPARATOR + c["text"] for c in completions]
    done = record["prefix"].startswith("# Answer") or "\n# Answer" in record["prefix"]
    reached = (check_answer(problem, record["prefix"]) if done
               else any(check_answer(problem, t) for t in whole))
    return {k: record[k] for k in ("row", "sample", "step")} | {"positive": bool(reached)}

  generate_to_jsonl(path, prefixes, make_prompt, policy.sampler(batch_size=256),
                    SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0,
                                   num_samples=config.rollouts),
                    seed=seed, chunk_size=256, postprocess=judge, desc="monte carlo labels")
  labels = read_monte_carlo_labels(path)
  agree = [int(a == int(b)) for (i, j), ls in labels.items()
           for a, b in zip(ls, rows[i]["samples"][j]["step_labels"])]
  return {"path": path, "agreement_with_checker": float(np.mean(agree)) if agree else None}


def read_monte_carlo_labels(path: str) -> dict[tuple[int, int], list[int]]:
  """(question row, sample) -> its steps' Monte-Carlo labels, from `monte_carlo_labels`."""
  labels: dict[tuple[int, int], list[int]] = {}
  for r in read_jsonl(path):
    labels.setdefault((r["row"], r["sample"]), []).append(int(r["positive"]))
  return labels


def evaluator_data_stage(config: EvaluatorDataConfig, seed: int):
  """PRM, ORM and OPRM records from the judged samples, split by question."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rows = list(read_jsonl(results["label_samples"]["path"]))
    mc_result = results["label_samples"].get("monte_carlo")
    mc = read_monte_carlo_labels(mc_result["path"]) if mc_result else None
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    heldout = set(order[:max(1, int(len(rows) * config.heldout))].tolist())
    data: dict[str, list[dict[str, Any]]] = {f"{kind}_{split}": [] for kind in ("prm", "orm")
                                             for split in ("train", "eval")}
    positives = {"prm": [], "orm": []}
    for i, row in enumerate(rows):
      split = "eval" if i in heldout else "train"
      seen = set()
      for j, sample in enumerate(row["samples"]):
        text = sample["text"]
        if text in seen or not text.strip():  # duplicates would weigh a solution twice
          continue
        seen.add(text)
        steps = split_steps(text)
        labels = [int(x) for x in (mc[(i, j)] if mc else sample["step_labels"])]
        if len(labels) != len(steps):
          raise ValueError(f"sample {j} of label question {i}: {len(steps)} steps but "
                           f"{len(labels)} labels")
        pieces = process_steps(steps)
        if config.after_error == "drop" and 0 in labels:  # the separator stays on the step
          pieces, labels = pieces[:labels.index(0) + 1], labels[:labels.index(0) + 1]
        data[f"prm_{split}"].append({"prompt": row["prompt"], "steps": pieces,
                                     "labels": labels})
        label = int(sample["correct"] and sample["finished"])
        data[f"orm_{split}"].append({"prompt": row["prompt"], "response": text, "label": label})
        positives["prm"] += labels
        positives["orm"].append(label)
    paths = {name: _write(stage_dir, name + ".jsonl", records) for name, records in data.items()}
    return {**paths, "counts": {name: len(records) for name, records in data.items()},
            "positive_share": {k: float(np.mean(v)) if v else None for k, v in positives.items()}}
  return run


def outcome_pairs(records: Sequence[Mapping[str, Any]], gold: Mapping[str, str] | None = None
                  ) -> list[dict[str, Any]]:
  """Preference pairs from outcome records ({"prompt", "response", "label"}): every right
  response of a prompt against every wrong one of the same prompt, in record order; the
  responses as an implicit reward model reads them (`process_steps`, joined). gold:
  prompt -> a right solution counted among that prompt's right responses (once)."""
  def as_read(text: str) -> str:
    return "".join(process_steps(text)) or text

  groups: dict[str, tuple[list[str], list[str]]] = {}
  for record in records:
    groups.setdefault(record["prompt"], ([], []))[0 if record["label"] else 1].append(
        as_read(record["response"]))
  for prompt, (rights, _) in groups.items():
    solution = (gold or {}).get(prompt)
    if solution is not None and as_read(solution) not in rights:
      rights.append(as_read(solution))
  return [{"prompt": prompt, "chosen": right, "rejected": wrong}
          for prompt, (rights, wrongs) in groups.items() for right in rights for wrong in wrongs]


def implicit_evaluator_stage(model: TransformerConfig, backbone: str,
                             schedule: TrainingSchedule, beta: float, gold: bool,
                             chat_template: str, mesh_fn, rules, seed: int):
  """The implicit PRM: the backbone's language model trained by DPO (`train_dpo`, the
  backbone as its reference) on `outcome_pairs` of the outcome records; with `gold`,
  each label question's gold solution is one of its right responses (pairs then exist
  for questions the policy never solved)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    data = results["evaluator_data"]
    files, counts = {}, {}
    for split in ("train", "eval"):
      records = list(read_jsonl(data[f"orm_{split}"]))
      solutions = ({r["prompt"]: parse_question(r["prompt"]).solution() for r in records}
                   if gold else None)
      pairs = outcome_pairs(records, solutions)
      files[split], counts[split] = _write(stage_dir, f"pairs_{split}.jsonl", pairs), len(pairs)
    if not counts["train"]:
      raise ValueError(f"{data['orm_train']}: no label question has both a right and a wrong "
                       "sample, so there is no pair to train the implicit PRM on")
    config = schedule.data("preference", (files["train"],),
                           eval_files=(files["eval"],) if counts["eval"] else (),
                           chat_template=chat_template, seed=seed, eval_batches=4, pack=False)
    summary = train_dpo(fs.join(stage_dir, "run"), model, config,
                        results["vocabulary"]["model"], schedule.optimizer(), schedule.loop(),
                        init_from=results[backbone]["workdir"], beta=beta, mesh=mesh_fn(),
                        rules=rules, seed=seed)
    final = summary["final_metrics"]
    return {"workdir": fs.join(stage_dir, "run"), "pairs": counts,
            "eval_accuracy": final.get("eval/accuracy"), "eval_loss": final.get("eval/loss"),
            "steps": summary["steps"]}
  return run


def evaluator_stage(kind: str, model: TransformerConfig, backbone: str,
                    schedule: TrainingSchedule, chat_template: str, mesh_fn, rules, seed: int):
  """A process ('prm'), outcome ('orm') or mixed ('oprm') reward model; the backbone
  (`model`) comes from the SFT stage `backbone`."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    data = results["evaluator_data"]
    kinds = {"prm": ("prm",), "orm": ("orm",), "oprm": ("prm", "orm")}[kind]
    config = schedule.data("process", [data[f"{k}_train"] for k in kinds],
                           eval_files=tuple(data[f"{k}_eval"] for k in kinds),
                           chat_template=chat_template, seed=seed, eval_batches=4, pack=False)
    summary = train_reward_model(stage_dir, model, config, results["vocabulary"]["model"],
                                 schedule.optimizer(), schedule.loop(),
                                 init_from=results[backbone]["workdir"], mesh=mesh_fn(),
                                 rules=rules, seed=seed)
    final = summary["final_metrics"]
    return {"workdir": stage_dir, "eval_accuracy": final.get("eval/accuracy"),
            "eval_loss": final.get("eval/loss"), "steps": summary["steps"]}
  return run


def samples_stage(policy_stage: str, model: TransformerConfig, config: RerankConfig,
                  chat_template: str, mesh_fn, rules, seed: int):
  """`config.num_samples` samples per held-out question from a policy, judged."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    policy = trained_run(results, policy_stage, model, mesh_fn(), rules)

    def judge(record, completions):
      return {**record, "samples": [
          {k: v for k, v in _judge(record, c["text"]).items() if k != "step_labels"}
          | {"finished": c["finished"], "tokens": len(c["tokens"])} for c in completions]}

    path = fs.join(stage_dir, "samples.jsonl")
    stats = generate_to_jsonl(
        path, list(read_jsonl(results["world"]["eval_prompts"])),
        prompt_renderer(policy.vocab, chat_template), policy.sampler(batch_size=256),
        SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                       num_samples=config.num_samples), seed=seed + 400, chunk_size=64,
        postprocess=judge, desc=f"samples {policy_stage}")
    return {"path": path, "generated_tokens": stats["generated_tokens"],
            "seconds": stats["seconds"]}
  return run


def score_samples(rows: Sequence[Mapping[str, Any]], evaluator) -> list[dict[str, Any]]:
  """Each sample's step probabilities and outcome probability under one evaluator."""
  prompts = [r["prompt"] for r in rows for _ in r["samples"]]
  texts = [s["text"] for r in rows for s in r["samples"]]
  scored = evaluator.score(prompts, texts)
  return [{"steps": [round(float(p), 5) for p in s.probabilities],
           "outcome": round(float(1 / (1 + np.exp(-s.outcome))), 5)} for s in scored]


def first_samples(rows: Sequence[Mapping[str, Any]], count: int | None
                  ) -> list[Mapping[str, Any]]:
  """The rows with each question's first `count` samples (all when None)."""
  return [r if count is None else {**r, "samples": r["samples"][:count]} for r in rows]


def likelihood_scores(rows: Sequence[Mapping[str, Any]], policy, chat_template: str
                      ) -> list[dict[str, Any]]:
  """Each sample's steps scored by a policy's own language model: the mean token
  log-probability of each piece a process reward model sees (`process_steps`), in the
  format of `score_samples` (no outcome); a piece with no tokens (an empty solution)
  scores -inf. A diagnostic: how much of the step check the policy's next-token
  distribution already holds, next to what an evaluator learned."""
  make_prompt = prompt_renderer(policy.vocab, chat_template)
  prompts, continuations, lengths = [], [], []
  for row in rows:
    prompt = make_prompt(row)
    for sample in row["samples"]:
      pieces = [[int(t) for t in policy.vocab.encode(piece)]
                for piece in process_steps(sample["text"]) or [sample["text"]]]
      prompts.append(prompt)
      continuations.append([t for piece in pieces for t in piece])
      lengths.append([len(piece) for piece in pieces])
  logprobs = policy.sampler(batch_size=256).score(prompts, continuations)
  out = []
  for values, sizes in zip(logprobs, lengths):
    ends = np.cumsum(sizes)
    out.append({"steps": [round(float(values[end - size:end].mean()), 5) if size else -np.inf
                          for size, end in zip(sizes, ends)]})
  return out


def corrupted_first_steps(rows: Sequence[Mapping[str, Any]]
                          ) -> dict[str, list[tuple[str, str]]]:
  """Gold solutions of the questions with two or more operations, each beside one whose
  first step is wrong and everything else gold: 'result' writes the first result one
  too high, 'rest' miscopies the last digit of the operations left. Both first steps
  follow the same prompt, so a step check scores the gold one higher and a score that
  knows only the question scores both alike. {kind: [(prompt, gold, corrupted)]}"""
  out: dict[str, list[tuple[str, str]]] = {"result": [], "rest": []}
  for row in rows:
    problem = parse_question(row["prompt"], int(row["level"]))
    if len(problem.ops) < 2:
      continue
    steps = problem.steps()
    done, rest = steps[0].split(";", 1)
    head, value = done.rsplit("=", 1)
    wrong = {"result": f"{head}={int(value) + 1};{rest}",
             "rest": f"{done};{rest[:-1]}{(int(rest[-1]) + 1) % 10}"}
    gold = problem.solution()
    for kind, first in wrong.items():
      out[kind].append((row["prompt"], gold,
                        join_steps([first] + steps[1:], str(problem.answer))))
  return out


def solution_scores(scored: Sequence[Mapping[str, Any]], evaluator: str, how: str
                    ) -> np.ndarray:
  """One score per sample: an outcome model's probability, or the aggregated steps."""
  if how == "outcome":
    return np.array([s["outcome"] for s in scored])
  return np.array([aggregate(s["steps"], how) for s in scored])


def strategies(config: RerankConfig, evaluators: Sequence[str] = EVALUATORS
               ) -> list[tuple[str, str | None, str | None]]:
  """(name, evaluator, aggregation) of every reranking strategy measured."""
  out = [("majority", None, None)]
  for evaluator in evaluators:
    hows = ("outcome",) if evaluator == "orm" else (*AGGREGATIONS, "outcome")
    if evaluator in ("oprm", "iprm"):
      hows = (config.aggregation, "outcome")
    for how in hows:
      out += [(f"weighted/{evaluator}/{how}", evaluator, how),
              (f"best_of_n/{evaluator}/{how}", evaluator, how)]
  return out


def rerank_curves(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, np.ndarray],
                  config: RerankConfig, easy_levels: Sequence[int], seed: int,
                  evaluators: Sequence[str] = EVALUATORS) -> dict[str, Any]:
  """Accuracy of every strategy at every N, for easy and hard questions.

  rows: judged samples per question ({"answer", "level", "samples": [{"answer",
  "correct", "tokens"}]}); scores["<evaluator>/<how>"]: [questions, N]. A chosen answer
  is right when `answers_equal` says it equals the question's answer.
  """
  rng = np.random.default_rng(seed)
  num = config.num_samples
  answers = [[s["answer"] for s in r["samples"]] for r in rows]
  gold = [r["answer"] for r in rows]
  verdicts: dict[tuple[str, str], bool] = {}

  def right(choice: str | None, i: int) -> bool:
    if choice is None:
      return False
    if (choice, gold[i]) not in verdicts:
      verdicts[(choice, gold[i])] = answers_equal(choice, gold[i])
    return verdicts[(choice, gold[i])]

  groups = {"easy": [i for i, r in enumerate(rows) if r["level"] in easy_levels],
            "hard": [i for i, r in enumerate(rows)
                     if r["level"] is not None and r["level"] not in easy_levels]}
  tokens = np.array([[s["tokens"] for s in r["samples"]] for r in rows], np.float64)
  out: dict[str, Any] = {"sizes": config.sizes, "groups": {}}
  subsets = {n: ([np.arange(num)] if n == num else
                 [rng.choice(num, n, replace=False) for _ in range(config.subsets)])
             for n in config.sizes}
  for group, members in groups.items():
    table: dict[str, list[float]] = {}
    for name, evaluator, how in strategies(config, evaluators) + [("pass@n", None, None)]:
      accuracy = []
      for n in config.sizes:
        hits = []
        for idx in subsets[n]:
          for i in members:
            picked = [answers[i][j] for j in idx]
            if name == "pass@n":
              hits.append(any(rows[i]["samples"][j]["correct"] for j in idx))
              continue
            if name == "majority":
              choice = majority_vote(picked)
            else:
              values = scores[f"{evaluator}/{how}"][i][idx]
              vote = weighted_majority_vote if name.startswith("weighted") else best_of_n
              choice = vote(picked, values)
            hits.append(right(choice, i))
        accuracy.append(float(np.mean(hits)) if hits else float("nan"))
      table[name] = accuracy
    out["groups"][group] = {"questions": len(members), "accuracy": table,
                            "tokens_per_sample": float(tokens[members].mean()) if members
                            else float("nan")}
  return out


def pairwise_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
  """The chance that a random positive scores above a random negative (ties count half);
  NaN when either side is empty."""
  pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
  if not len(pos) or not len(neg):
    return float("nan")
  return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def separation(rows: Sequence[Mapping[str, Any]], scores: np.ndarray, easy_levels: Sequence[int]
               ) -> dict[str, dict[str, float]]:
  """How well one score per sample ([questions, N]) tells right solutions from wrong ones,
  per group: `within`, the mean over questions with both kinds of samples of their AUC
  (what reranking needs), and `overall`, the AUC over all samples pooled (which a score
  can earn by knowing which questions are hard)."""
  out = {}
  for group in ("easy", "hard"):
    within, pos, neg = [], [], []
    for row, values in zip(rows, scores):
      if (row["level"] in easy_levels) != (group == "easy"):
        continue
      right = np.array([s["correct"] for s in row["samples"]], bool)
      pos += values[right].tolist()
      neg += values[~right].tolist()
      if right.any() and not right.all():
        within.append(pairwise_auc(values[right], values[~right]))
    out[group] = {"within": float(np.mean(within)) if within else float("nan"),
                  "questions": len(within), "overall": pairwise_auc(pos, neg)}
  return out


def step_separation(rows: Sequence[Mapping[str, Any]],
                    step_scores: Sequence[Sequence[Sequence[float]]],
                    easy_levels: Sequence[int]) -> dict[str, dict[str, float]]:
  """Whether a score checks the step itself: among samples of one question that agree on
  every step before step j and are right so far, the AUC of the right step j against a
  wrong one (their first error), averaged over such (question, prefix) groups that have
  both. A causal evaluator sees the same prefix in both, so only the step can tell them
  apart; a score that only knows where errors are likely sits at 0.5.

  rows: judged samples per question ({"prompt", "level", "samples": [{"text"}]});
  step_scores[i][j]: the step scores of sample j of question i."""
  out = {}
  for group in ("easy", "hard"):
    aucs = []
    for row, scores in zip(rows, step_scores):
      if (row["level"] in easy_levels) != (group == "easy"):
        continue
      problem = parse_question(row["prompt"], int(row["level"]))
      by_prefix: dict[tuple[str, ...], tuple[list[float], list[float]]] = {}
      for sample, values in zip(row["samples"], scores):
        steps, labels = split_steps(sample["text"]), check_steps(problem, sample["text"])
        if len(values) != len(steps):
          continue
        for j, (label, value) in enumerate(zip(labels, values)):
          by_prefix.setdefault(tuple(steps[:j]), ([], []))[0 if label else 1].append(value)
          if not label:
            break
      aucs += [pairwise_auc(right, wrong) for right, wrong in by_prefix.values()
               if right and wrong]
    out[group] = {"step": float(np.mean(aucs)) if aucs else float("nan"),
                  "prefixes": len(aucs)}
  return out


def first_step_check(rows: Sequence[Mapping[str, Any]], score, easy_levels: Sequence[int]
                     ) -> dict[str, dict[str, float]]:
  """How often a score puts a gold first step above a corrupted one (`corrupted_first_steps`
  of the held-out questions; ties count half), per group (easy: `easy_levels`) and kind.
  score(pseudo-rows) returns `score_samples`-style entries, two samples per row."""
  out: dict[str, dict[str, float]] = {}
  easy = {r["prompt"] for r in rows if r["level"] in easy_levels}
  for kind, triples in corrupted_first_steps(rows).items():
    pseudo = [{"prompt": p, "samples": [{"text": gold}, {"text": bad}]}
              for p, gold, bad in triples]
    scored = score(pseudo)
    for group in ("easy", "hard"):
      wins = [float(a["steps"][0] > b["steps"][0]) + 0.5 * float(a["steps"][0] == b["steps"][0])
              for row, a, b in zip(pseudo, scored[::2], scored[1::2])
              if (row["prompt"] in easy) == (group == "easy")]
      out.setdefault(group, {})[kind] = float(np.mean(wins)) if wins else float("nan")
  return out


def rerank_stage(config: RerankConfig, model: TransformerConfig,
                 policies: Mapping[str, TransformerConfig], easy_levels: Sequence[int],
                 chat_template: str, mesh_fn, rules, seed: int,
                 names: Sequence[str] = EVALUATORS):
  """Scores both policies' samples with the evaluators `names` (`model`: their
  architecture) and measures reranking. Beside them, as diagnostics of the step check:
  each policy's (`policies`: SFT stage -> its architecture) own likelihood of the small
  policy's steps, and every score on gold against corrupted first steps."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    mesh = mesh_fn()
    evaluators = {e: load_process_model(results[e]["workdir"], config=model, mesh=mesh,
                                        rules=rules, batch_size=128) for e in names}
    out = {}

    def cached(name: str, compute):
      path = fs.join(stage_dir, name)
      if fs.exists(path):
        with fs.open(path) as f:
          return json.load(f)
      value = compute()
      if is_writer():
        fs.write_atomically(path, json.dumps(value))
      return value

    # The large policy's samples are scored by the PRM only (its curves); the evaluators
    # are compared on the small policy, whose samples they were trained on.
    for policy, scoring in (("samples_small", names), ("samples_large", ("prm",))):
      rows = list(read_jsonl(results[policy]["path"]))
      scored = cached(f"{policy}_scores.json",
                      lambda: {e: score_samples(rows, evaluators[e]) for e in scoring})
      scores = {}
      for _, evaluator, how in strategies(config, scoring):
        if evaluator is not None:
          flat = solution_scores(scored[evaluator], evaluator, how)
          scores[f"{evaluator}/{how}"] = flat.reshape(len(rows), config.num_samples)
      out[policy] = rerank_curves(rows, scores, config, easy_levels, seed, scoring)
      out[policy]["sample_accuracy"] = float(np.mean(
          [s["correct"] for r in rows for s in r["samples"]]))
    rows = first_samples(list(read_jsonl(results["samples_small"]["path"])),
                         config.likelihood_samples)
    loaded = {stage: trained_run(results, stage, arch, mesh, rules)
              for stage, arch in policies.items()}
    cached("samples_small_likelihoods.json", lambda: {
        stage: likelihood_scores(rows, run, chat_template) for stage, run in loaded.items()})
    heldout = list(read_jsonl(results["world"]["eval_prompts"]))
    checks = {e: (lambda pseudo, e=e: score_samples(pseudo, evaluators[e])) for e in names}
    checks.update({f"likelihood/{stage}": (lambda pseudo, run=run: likelihood_scores(
        pseudo, run, chat_template)) for stage, run in loaded.items()})
    out["first_step_check"] = {name: first_step_check(heldout, score, easy_levels)
                               for name, score in checks.items()}
    return out
  return run


def ppo_stage(model: TransformerConfig, ppo: PPOConfig, schedule: TrainingSchedule,
              chat_template: str, prompts_key: str, process_evaluator: str | None,
              process_scale: float, format_penalty: float, mesh_fn, rules, seed: int,
              world: LeveledMathConfig | None = None):
  """PPO of the small SFT policy on the world's `prompts_key` file: the final-answer reward
  (0.25 for a hard question's "Unavailable"), the format penalty and, with a
  `process_evaluator` stage ('prm', 'iprm'), that evaluator's process reward. With
  `prompts_key` ORACLE_PROMPTS, the RL questions of every level with their answers
  (written to prompts.jsonl from `world`): the exact reward on hard questions too."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    if prompts_key == ORACLE_PROMPTS:
      prompts = _write(stage_dir, "prompts.jsonl", build_world(world).records("rl"))
    else:
      prompts = results["world"][prompts_key]
    terms = {"answer": (math_answer_term(), 1.0), "format": (math_format_term(format_penalty),
                                                              1.0)}
    if process_evaluator:
      terms["process"] = (ProcessRewardTerm(results[process_evaluator]["workdir"]),
                          process_scale)
    summary = train_ppo(stage_dir, model, prompts, results["vocabulary"]["model"],
                        results["sft"]["workdir"],
                        reward=CompositeReward(terms), ppo=ppo, optimizer=schedule.optimizer(),
                        loop=schedule.loop(), chat_template=chat_template, mesh=mesh_fn(),
                        rules=rules, seed=seed)
    return {"workdir": stage_dir, "policy": summary["policy"], "steps": summary["steps"],
            "final_metrics": summary["final_metrics"]}
  return run


def rl_eval_stage(model: TransformerConfig, chat_template: str, policies: Sequence[str],
                  max_new_tokens: int, num_samples: int, mesh_fn, rules, seed: int,
                  world: LeveledMathConfig, questions: int | None = None):
  """Greedy and sampled (T=1) accuracy per level of each policy on held-out questions:
  the world's `eval` split, or with `questions`, that many test questions per level
  (`LeveledMathWorld.test_records`, written to questions.jsonl), none of them a question
  of any split."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    if questions is None:
      records = list(read_jsonl(results["world"]["eval_prompts"]))
    else:
      records = build_world(world).test_records(questions)
      _write(stage_dir, "questions.jsonl", records)
    trained = {r["prompt"] for name in TRAINING_FILES for r in read_jsonl(results["world"][name])}
    mesh = mesh_fn()
    rows = []
    for stage in policies:
      policy = trained_run(results, stage, model, mesh, rules)
      sampler = policy.sampler(batch_size=256)
      make_prompt = prompt_renderer(policy.vocab, chat_template)
      prompts = [make_prompt(r) for r in records]
      for mode, temperature, n in (("greedy", 0.0, 1), ("sampled", 1.0, num_samples)):
        result = sampler.generate(prompts, SamplingConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, num_samples=n),
            jax.random.key(seed + 500))
        for record, texts in zip(records, result.texts):
          problem = parse_question(record["prompt"], int(record["level"]))
          rows.append({"policy": stage, "mode": mode, "level": int(record["level"]),
                       "accuracy": float(np.mean([check_answer(problem, t) for t in texts]))})
    table = []
    for stage in policies:
      for mode in ("greedy", "sampled"):
        entry = {"policy": stage, "mode": mode}
        for level in sorted({r["level"] for r in rows}):
          entry[f"level {level}"] = float(np.mean([r["accuracy"] for r in rows
                                                   if r["policy"] == stage and r["mode"] == mode
                                                   and r["level"] == level]))
        table.append(entry)
    return {"rows": table, "questions": len(records),
            "overlap": sum(r["prompt"] in trained for r in records)}
  return run


def seed_pipeline(workdir: str, model: TransformerConfig, model_large: TransformerConfig,
                  world: LeveledMathConfig, sft: TrainingSchedule, sft_large: TrainingSchedule,
                  evaluator: TrainingSchedule, evaluator_data: EvaluatorDataConfig,
                  rerank: RerankConfig, ppo_schedule: TrainingSchedule, ppo: PPOConfig,
                  process_scale: float, format_penalty: float, vocab_size: int,
                  chat_template: str, eval_samples: int, mesh_fn, rules, seed: int,
                  evaluator_backbone: str, implicit: TrainingSchedule | None,
                  implicit_beta: float, implicit_gold: bool,
                  rl_eval_questions: int | None = None, oracle_rl: bool = False
                  ) -> dict[str, Any]:
  """Runs one seed's stages, world to rl_eval, in `workdir` and returns their results;
  without an `implicit` schedule, the implicit PRM and its PPO run are left out; with
  `oracle_rl`, a `ppo_oracle` stage is added."""
  if evaluator_backbone not in BACKBONES:
    raise ValueError(f"evaluator_backbone must be one of {BACKBONES}, got "
                     f"{evaluator_backbone!r}")
  settings = {"model": config_record(model), "seed": seed, "chat_template": chat_template}
  large = {**settings, "model": config_record(model_large)}
  model_evaluator = model if evaluator_backbone == "sft" else model_large
  evaluator_settings = {**(settings if evaluator_backbone == "sft" else large),
                        "backbone": evaluator_backbone}
  world = dataclasses.replace(world, seed=seed)
  # The samples do not depend on the likelihood diagnostic's share of them.
  sampling = {k: v for k, v in config_record(rerank).items() if k != "likelihood_samples"}
  names = EVALUATORS if implicit is not None else tuple(e for e in EVALUATORS if e != "iprm")
  process_ppo = {name: e for name, e in PROCESS_PPO.items() if e in names}
  ppo_settings = {**settings, "ppo": config_record(ppo), "schedule": config_record(ppo_schedule),
                  "format_penalty": format_penalty}
  oracle = ("ppo_oracle",) if oracle_rl else ()
  stages = [
      Stage("world", world_stage(world, chat_template), {"world": config_record(world),
                                                         "chat_template": chat_template}),
      # Newlines are the step separator, so the vocabulary keeps them (identity
      # normalisation, '\n' a piece of its own) and adds no dummy prefix: a step
      # tokenized alone has the tokens it has inside a whole solution.
      Stage("vocabulary", vocabulary_stage(
          vocab_size, split_digits=True, model_type="bpe", normalization_rule_name="identity",
          remove_extra_whitespaces=False, add_dummy_prefix=False, user_defined_symbols="\n"),
            {"vocab_size": vocab_size, "model_type": "bpe", "newlines": True}),
      Stage("sft", training_stage(model, sft, "sft", "sft", None, chat_template, mesh_fn, rules,
                                  seed), {**settings, "schedule": config_record(sft)}),
      Stage("sft_large", training_stage(model_large, sft_large, "sft", "sft", None,
                                        chat_template, mesh_fn, rules, seed),
            {**large, "schedule": config_record(sft_large)}),
      Stage("label_samples", label_samples_stage(evaluator_data, model, chat_template,
                                                 rerank.max_new_tokens, mesh_fn, rules, seed),
            {**settings, "data": config_record(evaluator_data)}),
      Stage("evaluator_data", evaluator_data_stage(evaluator_data, seed),
            {"data": config_record(evaluator_data), "seed": seed}),
      *[Stage(kind, evaluator_stage(kind, model_evaluator, evaluator_backbone, evaluator,
                                    chat_template, mesh_fn, rules, seed),
              {**evaluator_settings, "schedule": config_record(evaluator)})
        for kind in names if kind != "iprm"],
      *([Stage("iprm", implicit_evaluator_stage(model_evaluator, evaluator_backbone, implicit,
                                                implicit_beta, implicit_gold, chat_template,
                                                mesh_fn, rules, seed),
               {**evaluator_settings, "schedule": config_record(implicit),
                "beta": implicit_beta, "gold": implicit_gold})] if "iprm" in names else []),
      Stage("samples_small", samples_stage("sft", model, rerank, chat_template, mesh_fn,
                                           rules, seed),
            {**settings, "rerank": sampling}),
      Stage("samples_large", samples_stage("sft_large", model_large, rerank, chat_template,
                                           mesh_fn, rules, seed),
            {**large, "rerank": sampling}),
      Stage("rerank", rerank_stage(rerank, model_evaluator, {"sft": model,
                                                             "sft_large": model_large},
                                   world.easy_levels, chat_template, mesh_fn, rules, seed,
                                   names),
            {**evaluator_settings, "rerank": config_record(rerank)}),
      Stage("ppo_outcome", ppo_stage(model, ppo, ppo_schedule, chat_template,
                                     "rl_easy_prompts", None, process_scale, format_penalty,
                                     mesh_fn, rules, seed), ppo_settings),
      *[Stage(name, ppo_stage(model, ppo, ppo_schedule, chat_template, "rl_prompts",
                              evaluator, process_scale, format_penalty, mesh_fn, rules, seed),
              {**ppo_settings, "process_scale": process_scale})
        for name, evaluator in process_ppo.items()],
      # A reference for the evaluators' rewards: the exact answer reward on every level.
      *[Stage(name, ppo_stage(model, ppo, ppo_schedule, chat_template, ORACLE_PROMPTS, None,
                              process_scale, format_penalty, mesh_fn, rules, seed, world),
              {**ppo_settings, "prompts": ORACLE_PROMPTS}) for name in oracle],
      Stage("rl_eval", rl_eval_stage(model, chat_template,
                                     ("sft", "ppo_outcome", *process_ppo, *oracle),
                                     rerank.max_new_tokens, eval_samples, mesh_fn, rules, seed,
                                     world, rl_eval_questions),
            {**settings, "eval_samples": eval_samples,
             **({} if rl_eval_questions is None else {"questions": rl_eval_questions})}),
  ]
  return Pipeline(workdir, stages).run()


def easy_to_hard_world(workdir: str, model: TransformerConfig, model_large: TransformerConfig,
                       world: LeveledMathConfig = LeveledMathConfig(),
                       sft: TrainingSchedule = TrainingSchedule(steps=800, learning_rate=3e-3,
                                                                batch_size=64, seq_len=96),
                       sft_large: TrainingSchedule = TrainingSchedule(
                           steps=800, learning_rate=2e-3, batch_size=64, seq_len=96),
                       evaluator: TrainingSchedule = TrainingSchedule(
                           steps=300, learning_rate=1e-3, batch_size=32, seq_len=128),
                       evaluator_data: EvaluatorDataConfig = EvaluatorDataConfig(),
                       rerank: RerankConfig = RerankConfig(),
                       ppo_schedule: TrainingSchedule = TrainingSchedule(
                           steps=40, learning_rate=1e-4, warmup_steps=0),
                       ppo: PPOConfig = PPOConfig(
                           rollout_batch_size=64, mini_batch_size=16, num_epochs=2,
                           max_prompt_len=32, max_new_tokens=96, temperature=0.7,
                           kl_coef=0.01, whiten_rewards="scale", value_init="policy"),
                       process_scale: float = 1.0, format_penalty: float = -1.0,
                       vocab_size: int = 384, chat_template: str = "plain",
                       eval_samples: int = 4, seeds: Sequence[int] = (0,),
                       mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                       evaluator_backbone: str = "sft",
                       implicit: TrainingSchedule | None = TrainingSchedule(
                           steps=300, learning_rate=1e-4, warmup_steps=20, batch_size=32,
                           seq_len=128),
                       implicit_beta: float = 0.1, implicit_gold: bool = False,
                       rl_eval_questions: int | None = None, oracle_rl: bool = False
                       ) -> dict[str, Any]:
  """Runs the experiment for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md.

  evaluator_backbone: the SFT stage the evaluators start from, 'sft' (the small policy,
  whose samples they are trained on and rerank) or 'sft_large' (the large policy: an
  evaluator larger than the policy it judges). implicit, implicit_beta: the implicit
  PRM's DPO schedule (batch_size counts pairs; None leaves the implicit PRM and its PPO
  run out) and beta; implicit_gold: its pairs also put each label question's gold
  solution against the wrong samples. rl_eval_questions: the RL comparison's held-out
  questions per level, drawn apart from every split (None: the `eval` split's). oracle_rl:
  also PPO with the exact answer reward on every level's RL questions (`ppo_oracle`), what
  a perfect outcome evaluator would give RL here."""
  from align_jax.methods.easy_to_hard.report import report_rows, write_world_report
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(
          seed_dir, model, model_large, world, sft, sft_large, evaluator, evaluator_data,
          rerank, ppo_schedule, ppo, process_scale, format_penalty, vocab_size, chat_template,
          eval_samples, mesh_fn, rules, seed, evaluator_backbone, implicit, implicit_beta,
          implicit_gold, rl_eval_questions, oracle_rl),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, rerank, world, seconds,
                                                   evaluator_backbone),
      report_rows, ["policy", "strategy", "N", "easy", "hard"])
