"""SALMON's steps over any models, shared by the world run and the Hugging Face run:
answer pairs, judging under every principle, labelling passes, the principle-following
reward model and the RL reward (the reward model with RL-time principles plus symbolic
terms).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from align_jax.data.jsonl import read_jsonl
from align_jax.methods.salmon import judge as jd
from align_jax.methods.salmon import labels as lb
from align_jax.models import TransformerConfig
from align_jax.pipeline import TrainingSchedule
from align_jax.rewards import (CompositeReward, RewardModelTerm, fit_reward_normalization,
                               language_match_term, length_term)
from align_jax.rewards.reward_model import text_input
from align_jax.sampling import SamplingConfig
from align_jax.training import train_reward_model


@dataclasses.dataclass(frozen=True)
class SymbolicTerms:
  """The RL reward's symbolic terms: the length bonus `scale * min(tokens / tokens_norm *
  m, cap)` (m: the prompt record's "length_multiplier", set per prompt kind from
  `length_multipliers`, default 1) weighted `length_weight`; language match (langdetect)
  weighted `language_weight` (0: off). The missing-EOS penalty is
  PPOConfig.missing_eos_penalty."""
  length_tokens: int = 1024
  length_scale: float = 5.0
  length_cap: float = 0.8
  length_multipliers: tuple[tuple[str, float], ...] = ()
  length_weight: float = 1.0
  language_weight: float = 1.0

  def multiplier(self, kind: str | None) -> float:
    return dict(self.length_multipliers).get(kind or "", 1.0)


def answer_pairs(sampler, prompts: Sequence[Any], max_new_tokens: int, temperature: float,
                 key, stop_strings: tuple[str, ...] = ()) -> tuple[list[list[str]],
                                                                   list[list[bool]]]:
  """Two answers per prompt (two random streams of one sampling call): texts and whether
  each ended."""
  generated = sampler.generate(prompts, SamplingConfig(
      max_new_tokens=max_new_tokens, temperature=temperature, num_samples=2,
      stop_strings=stop_strings), key)
  return ([list(t) for t in generated.texts],
          [[bool(f) for f in done] for done in generated.finished])


def judge_pairs(sampler, prompts: Sequence[str], pairs: Sequence[Sequence[str]],
                principles: Sequence[lb.Principle], template: str = jd.JUDGE_TEMPLATE
                ) -> tuple[np.ndarray, np.ndarray]:
  """Every pair judged under every principle's positive definition: scores and whether
  the two orders agree, each [pairs, principles]."""
  items = [jd.Judgement(prompt, pair[0].strip(), pair[1].strip(), p.positive)
           for prompt, pair in zip(prompts, pairs) for p in principles]
  found = jd.judge(sampler, items, template=template)
  shape = (len(pairs), len(principles))
  return found["score"].reshape(shape), found["agree"].reshape(shape)


def tied(scores: Sequence[float], chosen: Sequence[int], negated: Sequence[bool]) -> bool:
  """Whether the drawn principles' largest |score| is shared by principles preferring
  different answers (exact judges score -1, 0 or 1: such a label would be the draw
  order's)."""
  signed = np.array([float(scores[i]) * (-1.0 if g else 1.0) for i, g in zip(chosen, negated)])
  top = signed[np.abs(signed) == np.abs(signed).max()]
  return bool(top.max() > 0 > top.min())


def label_records(rows: Sequence[Mapping[str, Any]], dims: np.ndarray,
                  principles: Sequence[lb.Principle], config: lb.LabelConfig, passes: int,
                  rng: np.random.Generator, skip_ties: bool = False,
                  other_language: Sequence[tuple[bool, bool]] | None = None,
                  disclaimer: Sequence[tuple[bool, bool]] | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
  """`passes` labelling passes over pairs ({"prompt", "answers": [first, second]}):
  reward-model records (each with its pair's index) and how many draws had no label (all
  drawn principles scored 0, or, with `skip_ties`, a tie between principles preferring
  different answers). `other_language` / `disclaimer`: per pair, whether each answer is
  in another language than the prompt / carries a boilerplate disclaimer."""
  records, unlabelled = [], 0
  names = [p.name for p in principles]
  for _ in range(passes):
    for index, (row, scores) in enumerate(zip(rows, dims)):
      record = lb.label_pair(row["prompt"], row["answers"][0], row["answers"][1], scores,
                             principles, rng, config,
                             other_language=other_language[index] if other_language else
                             (False, False),
                             disclaimer=disclaimer[index] if disclaimer else (False, False))
      if record is not None and skip_ties and tied(
          scores, [names.index(n) for n in record["names"]], record["negated"]):
        record = None
      if record is None:
        unlabelled += 1
      else:
        records.append({**record, "pair": index})
  return records, unlabelled


def draw_principles(pool: Sequence[str], weights: Sequence[float], k: int,
                    rng: np.random.Generator) -> list[str]:
  """k names of the pool drawn by weight without replacement."""
  w = np.asarray(weights, np.float64)
  return [pool[i] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False,
                                      p=w / w.sum())]


def rm_input(template: str | None, principled: bool):
  """What a reward model reads: the answer with the principles after it, or without."""
  return lb.reward_input(template) if principled else text_input(template)


def train_preferences(stage_dir: str, model: TransformerConfig, schedule: TrainingSchedule,
                      data_files: Sequence[str], vocabulary: str, init_from: str,
                      template: str | None, mesh, rules, seed: int) -> dict[str, Any]:
  """A Bradley-Terry reward model on preference records (pairs too long for a row are
  dropped, not cut: the principles are at the end): a reward model, or preference-model
  pre-training for one."""
  data = schedule.data("preference", data_files, chat_template=template, seed=seed,
                       truncate="drop")
  summary = train_reward_model(stage_dir, model, data, vocabulary, schedule.optimizer(),
                               schedule.loop(), init_from=init_from, mesh=mesh, rules=rules,
                               seed=seed)
  return {"workdir": stage_dir, "steps": summary["steps"],
          "final_loss": summary["final_metrics"].get("loss")}


def train_salmon_reward(stage_dir: str, model: TransformerConfig, schedule: TrainingSchedule,
                        data_files: Sequence[str], vocabulary: str, init_from: str,
                        samples_file: str, template: str | None, principled: bool, mesh,
                        rules, seed: int) -> dict[str, Any]:
  """`train_preferences`, then the reward normalised on the policy's answers
  (`samples_file`: {"prompt", "response", "principles"})."""
  out = train_preferences(stage_dir, model, schedule, data_files, vocabulary, init_from,
                          template, mesh, rules, seed)
  fit_reward_normalization(stage_dir, list(read_jsonl(samples_file)), mesh=mesh, rules=rules,
                           input_builder=rm_input(template, principled))
  return out


def rl_reward(reward_model: str, template: str | None, terms: SymbolicTerms) -> CompositeReward:
  """The principle-following reward model (reading each prompt record's "principles")
  plus the symbolic terms."""
  parts = {"reward_model": (RewardModelTerm(reward_model, input_builder=rm_input(template, True)),
                            1.0),
           "length": (length_term(terms.length_tokens, terms.length_scale, terms.length_cap),
                      terms.length_weight)}
  if terms.language_weight:
    parts["language"] = (language_match_term(), terms.language_weight)
  return CompositeReward(parts)
