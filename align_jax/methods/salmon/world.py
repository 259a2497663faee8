"""SALMON on the principles world: the base model judges the Self-Align policy's answers
under each principle, a principle-following reward model learns from those judgements,
and PPO against it is steered by the principles it is given at RL time.

The Self-Align world run comes first (`policy_run`, e.g. gin's `@self_align_world`, is
called to build or resume it; or it already exists in `policy_workdir`): its base model
is the judge and the reward models' backbone, its engraved model the policy. Per seed,
in WORKDIR/seed_<k>/:

  self_align      the Self-Align run's vocabulary, base model, policy and held-out
                  requests (its world must be this one)
  judge_skill     the base model's last pretraining phase, on fresh judging documents
                  with the loss on their verdicts (the judge and the reward models'
                  backbone; the policy never sees it)
  prompts         the world's requests for preferences (train pairs and held-out pairs)
                  and for RL, drawn apart from the held-out requests; each RL prompt
                  gets `RLConfig.sampled` principles drawn by weight (a principle that
                  judges the prompt's kind weighs `matching_weight`)
  responses       two answers per preference prompt from the policy (T=0.7, two
                  random streams)
  judge           every pair judged by the judge_skill model under every principle's
                  positive definition in both orders (`judge.judge` with the world's
                  `JUDGE_LAYOUT`), beside the world's exact pair judges (the oracle);
                  the judge's check on fresh judging documents
  rm_data         `passes` labelling passes over the train pairs (`labels.label_pair`)
                  with the judge's dimension scores, and with the oracle's; the
                  principle-blind pairs (the judge-labelled pairs without principles);
                  held-out pairs under principle combinations (with negations) that no
                  training pair has, labelled by the oracle; the world's public
                  preference data (`public_preferences`: fresh pairs of the judging
                  documents' kind under drawn principles, labelled by the exact judges)
  pmp             preference-model pre-training on the public data from the judge_skill
                  model (the paper's optional pre-training on public preference data)
  reward, reward_blind, reward_oracle
                  Bradley-Terry reward models from the pmp model (the judge_skill model
                  without it) on those pairs, normalised on the policy's answers (with RL
                  principles)
  rm_eval         the three reward models' accuracy on the held-out pairs
  ppo_<run>       PPO of the policy for each RL-time principle setting
                  (`RLConfig.runs`: principles added to every prompt's sampled ones),
                  reward = the principle-following reward model + symbolic terms
                  (length bonus, language match, missing-EOS penalty);
                  `ppo_oracle_<run>`: the settings of `RLConfig.oracle_runs` against
                  the oracle-label reward model
  eval            greedy answers of the policy and every PPO policy to the held-out
                  requests, and `EvalConfig.samples` sampled ones a request: principled
                  compliance per kind, self-praise, answers in full, length (with and
                  without a closing self-praise sentence)
  steering        whether the principle-following reward models follow each RL-time
                  addition on held-out pairs its exact judge tells apart (the answer
                  it prefers scored higher with it added, lower with it negated)

WORKDIR/report.md: judge agreement per principle, reward-model accuracy, the
controllability table (each RL-time setting against the first, with 2-standard-error
marks) and compliance against the Self-Align policy.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.methods.salmon import judge as jd
from align_jax.methods.salmon import labels as lb
from align_jax.methods.salmon import stages as st
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import Pipeline, Stage, TrainingSchedule, is_writer, run_seeds
from align_jax.pipeline.reports import (markdown_table, mean_std, mean_std_present, plot_cdfs,
                                        plot_lines, write_report)
from align_jax.pipeline.stages import read_completion, stage_seconds, stage_time_rows
from align_jax.ppo import PPOConfig, train_ppo
from align_jax.rewards import RewardContext, RewardModelTerm
from align_jax.rewards.reward_model import batch_from_records
from align_jax.sampling import SamplingConfig
from align_jax.training import train_lm
from align_jax.training.checkpoints import config_record
from align_jax.training.metrics import read_metrics
from align_jax.training.runs import load_run
from align_jax.worlds import principles as pw

TEMPLATE = "lines"   # the chat template of the Self-Align world's policy
PRINCIPLES = [lb.Principle(p.name, p.positive, p.negative) for p in pw.WORLD_PRINCIPLES]
NAMES = [p.name for p in pw.WORLD_PRINCIPLES]
# What the evaluation measures. "characters": the whole answer's length, as concision's
# exact judge reads it; "characters, praise apart": the answer without a closing
# self-praise sentence, so that a length change that is only that sentence going shows.
BEHAVIOURS = ("principled", "self-praise", "in full", "characters",
              "characters, praise apart")
NEGATED = "-"   # an RL-time addition "-name": the principle's negative definition


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
  """Preference data: `train_per_kind` and `eval_per_kind` prompts of each kind, two
  answers each (`temperature`, `max_new_tokens`), `passes` labelling passes (`labels`),
  `eval_draws` principle combinations per held-out pair; the judge is also checked on
  `judge_checks` fresh judging documents of the corpus's kind (can it judge at all?)."""
  train_per_kind: int = 80
  eval_per_kind: int = 10
  temperature: float = 0.7
  max_new_tokens: int = 64
  passes: int = 4
  labels: lb.LabelConfig = lb.LabelConfig()
  eval_draws: int = 4
  judge_checks: int = 200


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """RL-time principles and symbolic terms.

  prompts_per_kind RL prompts of each kind; each gets `sampled` principles drawn from
  `pool` by weight (1, or `matching_weight` for a principle that judges its kind);
  `runs`: (name, principles added to every prompt) for each PPO run, the first the
  reference setting; an added name with a leading "-" adds the principle's negative
  definition (e.g. "-concise": answer at length), replacing the positive one where it
  was sampled; `terms`: the symbolic terms (length multipliers by request kind).
  `oracle_runs`: the settings (by name) also trained against the oracle-label reward
  model, whose controllability is measured apart (the first setting among them is its
  reference)."""
  prompts_per_kind: int = 48
  sampled: int = 3
  pool: tuple[str, ...] = ("harmless", "honest", "reasoned", "clarifying", "balanced",
                           "poetic")
  matching_weight: float = 3.0
  runs: tuple[tuple[str, tuple[str, ...]], ...] = (("default", ()), ("modest", ("modest",)),
                                                   ("concise", ("concise",)))
  terms: st.SymbolicTerms = st.SymbolicTerms()
  oracle_runs: tuple[str, ...] = ("default",)

  def __post_init__(self):
    for name in (*self.pool, *(n.removeprefix(NEGATED) for _, added in self.runs
                               for n in added)):
      pw.world_principle(name)  # a clear error for an unknown name
    if not self.runs:
      raise ValueError("RLConfig.runs needs at least one (name, principles) setting")
    names = [name for name, _ in self.runs]
    for name in self.oracle_runs:
      if name not in names:
        raise ValueError(f"RLConfig.oracle_runs names {name!r}, which is not a setting of "
                         f"RLConfig.runs {names}")

  def sampling_record(self) -> dict[str, Any]:
    """What drawing the RL prompts and their sampled principles depends on (the runs'
    additions and terms act only in PPO)."""
    return {"prompts_per_kind": self.prompts_per_kind, "sampled": self.sampled,
            "pool": list(self.pool), "matching_weight": self.matching_weight}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Answers to the held-out requests: greedy ones, and `samples` a request at
  `temperature` (0: none), the policy's distribution as PPO samples it."""
  max_new_tokens: int = 96
  samples: int = 0
  temperature: float = 1.0


def _request(record: Mapping[str, Any]) -> pw.Request:
  return pw.Request(record["kind"], record["text"], tuple(record["facts"].items()))


def _record(request: pw.Request) -> dict[str, Any]:
  return {"kind": request.kind, "text": request.text, "facts": dict(request.facts)}


def turn(text: str) -> str:
  """A turn's content as the `lines` template carries it (it starts with a space)."""
  return f" {text.strip()}"


def world_prompt(text: str) -> str:
  """A request as the policy sees it: its user turn, then the assistant's marker."""
  return f"{pw.USER}{turn(text)}\n{pw.ASSISTANT}"


STOP = ("\n\n", f"\n{pw.USER}")   # where a world answer ends


def rl_principles(request: pw.Request, config: RLConfig, rng: np.random.Generator
                  ) -> list[str]:
  """`config.sampled` principle names from the pool, drawn by weight without replacement."""
  return st.draw_principles(config.pool, [
      config.matching_weight if request.kind in pw.world_principle(n).kinds else 1.0
      for n in config.pool], config.sampled, rng)


def definitions(names: Sequence[str]) -> list[str]:
  """The definitions of principles named: the negative one for a name "-name", else the
  positive one."""
  return [pw.world_principle(n.removeprefix(NEGATED)).negative if n.startswith(NEGATED)
          else pw.world_principle(n).positive for n in names]


def with_added(sampled: Sequence[str], added: Sequence[str]) -> list[str]:
  """A prompt's sampled principle names, then the run's additions; an addition replaces
  a sampled principle of the same name (positive or negated)."""
  bare = {n.removeprefix(NEGATED) for n in added}
  return [n for n in sampled if n.removeprefix(NEGATED) not in bare] + list(added)


def added_principles(rl: RLConfig) -> list[str]:
  """The principles the RL-time settings add (positive or negated), by name."""
  return sorted({n.removeprefix(NEGATED) for _, added in rl.runs for n in added})


def run_label(name: str, added: Sequence[str]) -> str:
  """A PPO run's row in the report: "PPO, concise (+concise)"."""
  return f"PPO, {name}" + (f" ({added_label(added)})" if added else "")


ORACLE_SUFFIX = ", oracle-label reward model"


def added_label(added: Sequence[str]) -> str:
  """How a run's additions read in the report: "+concise", "+concise negated"."""
  return ", ".join(f"+{n.removeprefix(NEGATED)}" + (" negated" if n.startswith(NEGATED)
                                                   else "") for n in added)


def self_align_stage(policy_workdir: str, world: pw.PrinciplesConfig):
  """The Self-Align run's vocabulary, base model, policy and held-out requests."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for stage in ("world", "vocabulary", "pretrain", "engrave"):
      record = read_completion(policy_workdir, stage)
      if record is None:
        raise ValueError(f"the Self-Align run in {policy_workdir} has not completed its stage "
                         f"{stage!r}; run gin/methods/self_align/world.gin with the same "
                         "seeds first (or bind salmon_world.policy_run)")
      found[stage] = record
    used = found["world"]["settings"].get("world")
    if used != config_record(world):
      raise ValueError(f"the Self-Align run in {policy_workdir} used another world "
                       f"({used}) than this run's PrinciplesConfig ({config_record(world)})")
    return {"vocabulary": found["vocabulary"]["result"]["model"],
            "base": found["pretrain"]["result"]["workdir"],
            "policy": found["engrave"]["result"]["workdir"],
            "requests": found["world"]["result"]["requests"]}
  return run


def judge_model(results: Mapping[str, Any]) -> str:
  """The judge and the reward models' backbone: the base model after its judging phase
  (the base itself when the phase has no steps)."""
  return results["judge_skill"]["workdir"] or results["self_align"]["base"]


def _loaded(results, which: str, model: TransformerConfig, mesh, rules):
  """The Self-Align run's "policy", the "judge", or a PPO stage's policy."""
  path = (results["self_align"]["policy"] if which == "policy" else judge_model(results)
          if which == "judge" else results[which]["policy"])
  return load_run(path, config=model, vocabulary=results["self_align"]["vocabulary"],
                  mesh=mesh, rules=rules)


def judge_skill_stage(model: TransformerConfig, world: pw.PrinciplesConfig, documents: int,
                      ties: float, schedule: TrainingSchedule, mesh_fn, rules, seed: int):
  """The base model's last pretraining phase: `documents` fresh judging documents
  (the corpus's kind, drawn apart from it; at `ties`, pairs their principle does not tell
  apart, with a coin-flip verdict) for `schedule.steps` steps (0: none), the loss
  on their verdicts (each document a prompt, its verdict the response, in the markerless
  "text" template: the same token ids as the whole document)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    if schedule.steps == 0:
      return {"workdir": None}
    the_world = pw.build_world(world)
    rng = np.random.default_rng(world.seed + 70_000)
    path = fs.join(stage_dir, "judging.jsonl")
    if is_writer():
      examples = [the_world.judging_example(rng, ties) for _ in range(documents)]
      write_jsonl(path, [{"prompt": p, "response": v} for p, v in examples], overwrite=True)
    data = schedule.data("sft", (path,), chat_template="text", seed=seed)
    summary = train_lm(stage_dir, model, data, results["self_align"]["vocabulary"],
                       schedule.optimizer(), schedule.loop(),
                       init_from=results["self_align"]["base"], mesh=mesh_fn(), rules=rules,
                       seed=seed)
    return {"workdir": stage_dir, "final_loss": summary["final_metrics"].get("loss")}
  return run


def public_preferences(world: pw.PrinciplesConfig, count: int, labels: lb.LabelConfig
                       ) -> list[dict[str, Any]]:
  """The world's public preference data: `count` fresh pairs of answers of the corpus's
  judging kind (drawn apart from the judging phase's and the checks' streams), each under
  principles drawn as the labelling passes draw them (`labels`: k ~ Geometric, each
  negated at random; the principle that tells the pair apart in place of one of them)
  and labelled by the exact judges with the same rule, without noise (ties redrawn): a
  preference record read with its principles after the response."""
  the_world = pw.build_world(world)
  rng = np.random.default_rng(world.seed + 80_000)
  out = []
  while len(out) < count:
    principle, negated, request, a, b, _ = the_world.judging_case(rng)
    oracle = [p.prefers(request, a, b) for p in pw.WORLD_PRINCIPLES]
    chosen, signs = lb.draw(len(PRINCIPLES), rng, labels)
    teller = NAMES.index(principle.name)
    if teller not in chosen:
      at = int(rng.integers(len(chosen)))
      chosen[at], signs[at] = teller, negated
    decided = lb.decide(oracle, chosen, signs)
    if decided is None or st.tied(oracle, chosen, signs):
      continue
    texts = lb.drawn_texts(PRINCIPLES, chosen, signs)
    good, bad = (a, b) if decided[0] > 0 else (b, a)
    out.append({"prompt": turn(request.text), "chosen": turn(good), "rejected": turn(bad),
                "principles": texts, "suffix": lb.principles_text(texts),
                "names": [NAMES[i] for i in chosen], "negated": signs,
                "decider": NAMES[decided[1]]})
  return out


def pmp_stage(model: TransformerConfig, schedule: TrainingSchedule, mesh_fn, rules,
              seed: int):
  """Preference-model pre-training on the world's public preference data (the rm_data
  stage's "public" records) from the judge model; the three reward models continue from
  it (none when there are no such records or `schedule.steps` is 0)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    path = results["rm_data"]["files"].get("public")
    if schedule.steps == 0 or path is None:
      return {"workdir": None}
    return st.train_preferences(stage_dir, model, schedule, [path],
                                results["self_align"]["vocabulary"], judge_model(results),
                                TEMPLATE, mesh_fn(), rules, seed)
  return run


def reward_backbone(results: Mapping[str, Any]) -> str:
  """What the reward models start from: the pre-trained preference model when the pmp
  stage ran, else the judge model."""
  return results.get("pmp", {}).get("workdir") or judge_model(results)


def prompts_stage(world: pw.PrinciplesConfig, preferences: PreferenceConfig, rl: RLConfig):
  """Preference prompts (train and held-out pairs) and RL prompts, apart from the
  held-out requests and from each other."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    the_world = pw.build_world(world)
    held_out = {r["text"] for r in read_jsonl(results["self_align"]["requests"])}
    rng = np.random.default_rng(world.seed + 30_000)
    taken = set(held_out)

    def draw(kind: str, fresh: bool) -> pw.Request:
      for _ in range(100_000):  # held-out requests never; pairs' prompts distinct if `fresh`
        request = the_world.request(kind, rng)
        if request.text not in taken:
          if fresh:
            taken.add(request.text)
          return request
      raise ValueError(
          f"the world (seed {world.seed}) has no {kind!r} request left that is neither a "
          "held-out request nor a held-out pair's prompt; lower "
          f"PreferenceConfig.eval_per_kind (now {preferences.eval_per_kind}) or widen the "
          "world's named sets")

    eval_pairs = [draw(k, True) for k in pw.KINDS for _ in range(preferences.eval_per_kind)]
    train_pairs = [draw(k, False) for k in pw.KINDS for _ in range(preferences.train_per_kind)]
    rl_prompts = [draw(k, False) for k in pw.KINDS for _ in range(rl.prompts_per_kind)]
    paths = {name: fs.join(stage_dir, f"{name}.jsonl") for name in ("pairs", "rl")}
    principle_rng = np.random.default_rng(world.seed + 31_000)
    if is_writer():
      write_jsonl(paths["pairs"], [{**_record(r), "split": split} for split, group in
                                   (("train", train_pairs), ("eval", eval_pairs))
                                   for r in group], overwrite=True)
      write_jsonl(paths["rl"], [{**_record(r), "principles": rl_principles(r, rl, principle_rng)}
                                for r in rl_prompts], overwrite=True)
    texts = [r.text for r in train_pairs + rl_prompts]
    return {**paths, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
            "rl_prompts": len(rl_prompts),
            "held_out_overlap": sum(t in held_out for t in texts + [r.text for r in eval_pairs]),
            "eval_pairs_in_training_prompts": sum(r.text in set(texts) for r in eval_pairs)}
  return run


def responses_stage(model: TransformerConfig, config: PreferenceConfig, mesh_fn, rules,
                    seed: int):
  """Two answers per preference prompt from the policy."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    import jax
    policy = _loaded(results, "policy", model, mesh_fn(), rules)
    records = list(read_jsonl(results["prompts"]["pairs"]))
    texts, finished = st.answer_pairs(
        policy.sampler(batch_size=128), [world_prompt(r["text"]) for r in records],
        config.max_new_tokens, config.temperature, jax.random.key(seed + 40), STOP)
    rows = [{**r, "answers": [turn(t) for t in pair], "finished": done}
            for r, pair, done in zip(records, texts, finished)]
    path = fs.join(stage_dir, "responses.jsonl")
    if is_writer():
      write_jsonl(path, rows, overwrite=True)
    answers = [(_request(r), a) for r in rows for a in r["answers"]]
    return {"responses": path,
            "identical_pairs": float(np.mean([r["answers"][0] == r["answers"][1] for r in rows])),
            "self-praise": float(np.mean([pw.praises_itself(a) for _, a in answers])),
            "in full": float(np.mean([pw.answers_in_full(q, a) for q, a in answers]))}
  return run


def judge_checks(sampler, world: pw.PrinciplesConfig, count: int) -> dict[str, Any]:
  """The judge on `count` fresh judging documents (as the corpus has them, drawn apart
  from it): per principle, how often its score has the document's sign and how often
  both orders agree."""
  the_world = pw.build_world(world)
  rng = np.random.default_rng(world.seed + 60_000)
  cases = [the_world.judging_case(rng) for _ in range(count)]
  found = jd.judge(sampler, [jd.Judgement(r.text, a, b, p.negative if neg else p.positive)
                             for p, neg, r, a, b, _ in cases], template=pw.JUDGE_LAYOUT)
  right = np.sign(found["score"]) == np.array([c[5] for c in cases])
  names = np.array([c[0].name for c in cases])
  return {n: {"documents": int((names == n).sum()),
              "sign agrees": float(right[names == n].mean()) if (names == n).any() else None,
              "orders agree": float(found["agree"][names == n].mean())
              if (names == n).any() else None} for n in NAMES}


def judge_stage(model: TransformerConfig, world: pw.PrinciplesConfig, checks: int, mesh_fn,
                rules):
  """The base model's judgements of every pair under every principle, and the oracle's;
  the judge's check on fresh judging documents."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    sampler = _loaded(results, "judge", model, mesh_fn(), rules).sampler(batch_size=64)
    rows = list(read_jsonl(results["responses"]["responses"]))
    scores, agree = st.judge_pairs(sampler, [r["text"] for r in rows],
                                   [r["answers"] for r in rows], PRINCIPLES, pw.JUDGE_LAYOUT)
    oracle = np.array([[p.prefers(_request(r), *r["answers"]) for p in pw.WORLD_PRINCIPLES]
                       for r in rows])
    out = [{**r, "judge": s.tolist(), "agree": a.tolist(), "oracle": o.tolist()}
           for r, s, a, o in zip(rows, scores, agree, oracle)]
    path = fs.join(stage_dir, "judged.jsonl")
    if is_writer():
      write_jsonl(path, out, overwrite=True)
    return {"judged": path, "agreement": judge_agreement(scores, agree, oracle),
            "documents": judge_checks(sampler, world, checks)}
  return run


def judge_agreement(scores: np.ndarray, agree: np.ndarray, oracle: np.ndarray
                    ) -> dict[str, dict[str, float]]:
  """Per principle, over the pairs the oracle tells apart: how often the judge's score has
  the oracle's sign, how often both orders agree, and how often they agree on the
  oracle's side; and the share of pairs the oracle tells apart."""
  out = {}
  for j, name in enumerate(NAMES):
    told = oracle[:, j] != 0
    n = int(told.sum())
    right = np.sign(scores[told, j]) == oracle[told, j]
    out[name] = {"pairs told apart": n, "share told apart": float(told.mean()),
                 "sign agrees": float(right.mean()) if n else float("nan"),
                 "orders agree": float(agree[told, j].mean()) if n else float("nan"),
                 "orders agree, oracle's side": float((right & agree[told, j]).mean())
                 if n else float("nan")}
  return out


def judge_leaning(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
  """Per principle, the judge's verdicts where its exact judge says nothing: over the
  judged pairs (`judge_stage` rows) whose exact judge ties, whose two answers differ in
  length and whose two orders agree (so the verdict reaches the labels), how many there
  are and the share that prefers the longer answer (0.5: no leaning)."""
  out = {}
  for j, name in enumerate(NAMES):
    longer = [(r["judge"][j] > 0) == (len(r["answers"][0]) > len(r["answers"][1]))
              for r in rows if r["oracle"][j] == 0 and r["agree"][j]
              and len(r["answers"][0]) != len(r["answers"][1]) and r["judge"][j] != 0]
    out[name] = {"verdicts": len(longer),
                 "for the longer": float(np.mean(longer)) if longer else float("nan")}
  return out


def combination(names: Sequence[str], negated: Sequence[bool]) -> tuple:
  """A principle combination as a set: (name, negated) pairs in name order."""
  return tuple(sorted(zip(names, (bool(n) for n in negated))))


def label_records(rows: Sequence[Mapping[str, Any]], dims: np.ndarray, config: PreferenceConfig,
                  rng: np.random.Generator, skip_ties: bool = False
                  ) -> tuple[list[dict[str, Any]], int]:
  """`stages.label_records` over the world's pairs and principles."""
  return st.label_records([{"prompt": turn(r["text"]), "answers": r["answers"]} for r in rows],
                          dims, PRINCIPLES, config.labels, config.passes, rng, skip_ties)


def oracle_agreement(records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
                     ) -> float:
  """How often a label equals the oracle's under the same drawn principles, over the
  records the oracle decides (label noise and overrides included)."""
  same = []
  for r in records:
    decided = lb.decide(rows[r["pair"]]["oracle"], [NAMES.index(n) for n in r["names"]],
                        r["negated"])
    if decided is not None:
      same.append((decided[0] > 0) == r["first_won"])
  return float(np.mean(same)) if same else float("nan")


def held_out_pairs(rows: Sequence[Mapping[str, Any]], seen: set, config: PreferenceConfig,
                   rng: np.random.Generator) -> tuple[list[dict[str, Any]], int]:
  """Held-out pairs under principle combinations no training record has, labelled by the
  oracle (no noise, no overrides; draws it leaves undecided or tied are skipped); and
  how many draws were redrawn as seen."""
  out, rejected = [], 0
  for row in rows:
    oracle = row["oracle"]
    for _ in range(config.eval_draws):
      for _ in range(100):
        chosen, negated = lb.draw(len(PRINCIPLES), rng, config.labels)
        key = combination([NAMES[i] for i in chosen], negated)
        if key not in seen:
          break
        rejected += 1
      else:
        continue
      decided = lb.decide(oracle, chosen, negated)
      if decided is None or st.tied(oracle, chosen, negated):
        continue
      texts = lb.drawn_texts(PRINCIPLES, chosen, negated)
      good, bad = row["answers"] if decided[0] > 0 else row["answers"][::-1]
      out.append({"prompt": turn(row["text"]), "chosen": good, "rejected": bad,
                  "principles": texts, "any_negated": any(negated),
                  "decider": NAMES[decided[1]], "combination": [list(k) for k in key]})
  return out, rejected


def rm_data_stage(config: PreferenceConfig, rl: RLConfig, world: pw.PrinciplesConfig,
                  public: int, seed: int):
  """Reward-model data from the judge's and the oracle's scores, and `public` records of
  the world's public preference data (see the module docstring)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rows = list(read_jsonl(results["judge"]["judged"]))
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    judged = jd.dimension_scores(np.array([r["judge"] for r in train]),
                                 np.array([r["agree"] for r in train]))
    oracle = np.array([r["oracle"] for r in train], np.float64)
    data, counts = {}, {}
    for name, dims in (("judge", judged), ("oracle", oracle)):
      data[name], counts[f"{name}: draws without a label"] = label_records(
          train, dims, config, np.random.default_rng(seed + 50), skip_ties=name == "oracle")
      counts[f"{name}: labels equal to the oracle's"] = oracle_agreement(data[name], train)
    data["blind"] = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in data["judge"]]
    if public:
      data["public"] = public_preferences(world, public, config.labels)
    seen = {combination(r["names"], r["negated"]) for n in ("judge", "oracle", "public")
            for r in data.get(n, ())}
    data["eval"], counts["held-out draws redrawn (combination seen)"] = held_out_pairs(
        evals, seen, config, np.random.default_rng(seed + 51))
    # Normalisation samples: the policy's answers with principles drawn as RL draws them.
    rng = np.random.default_rng(seed + 52)
    data["samples"] = [{"prompt": turn(r["text"]), "response": a,
                        "principles": definitions(rl_principles(_request(r), rl, rng))}
                       for r in train for a in r["answers"]]
    paths = {name: fs.join(stage_dir, f"{name}.jsonl") for name in data}
    if is_writer():
      for name, records in data.items():
        write_jsonl(paths[name], records, overwrite=True)
    return {"files": paths, **counts, **{f"{n} records": len(data[n]) for n in data},
            "held-out combinations seen in training": sum(
                combination(*zip(*r["combination"])) in seen for r in data["eval"]),
            "overridden labels": sum(r["overridden"] is not None for r in data["judge"])}
  return run


def reward_stage(model: TransformerConfig, schedule: TrainingSchedule, data_key: str,
                 principled: bool, mesh_fn, rules, seed: int):
  """A reward model from the judge model on the rm_data stage's `data_key` records (none
  when there are no records: a judge whose two orders never agree labels nothing)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    files = results["rm_data"]["files"]
    if not results["rm_data"][f"{data_key} records"]:
      return {"workdir": None, "skipped": f"no {data_key} records"}
    return st.train_salmon_reward(stage_dir, model, schedule, [files[data_key]],
                                  results["self_align"]["vocabulary"],
                                  reward_backbone(results), files["samples"], TEMPLATE,
                                  principled, mesh_fn(), rules, seed)
  return run


REWARD_MODELS = (("principle-following", "reward", True),
                 ("principle-blind", "reward_blind", False),
                 ("principle-following, oracle labels", "reward_oracle", True))


def _reward_term(results: Mapping[str, Any], stage: str, principled: bool, mesh_fn,
                 rules) -> RewardModelTerm:
  """The reward model of `stage` as a reward term, set up on the mesh."""
  term = RewardModelTerm(results[stage]["workdir"],
                         input_builder=st.rm_input(TEMPLATE, principled))
  term.setup(RewardContext(mesh=mesh_fn(), rules=rules))
  return term


def rm_eval_stage(mesh_fn, rules):
  """Each reward model's accuracy on the held-out pairs (chosen scored above rejected)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    records = list(read_jsonl(results["rm_data"]["files"]["eval"]))
    out = {}
    for name, stage, principled in REWARD_MODELS:
      if results[stage]["workdir"] is None:
        continue
      term = _reward_term(results, stage, principled, mesh_fn, rules)
      chosen, rejected = (term(batch_from_records([{**r, "response": r[side]} for r in records]))
                          for side in ("chosen", "rejected"))
      right = chosen > rejected
      negated = np.array([r["any_negated"] for r in records], bool)
      out[name] = {"all": float(right.mean()), "with a negated principle":
                   float(right[negated].mean()) if negated.any() else float("nan"),
                   "no negated principle": float(right[~negated].mean())
                   if (~negated).any() else float("nan"), "pairs": len(records)}
    return out
  return run


def steering_stage(rl: RLConfig, mesh_fn, rules, seed: int):
  """Whether the principle-following reward models follow the RL-time additions: on the
  held-out pairs that an added principle's exact judge tells apart, the share of pairs
  whose reward-model scores prefer the answer the principle prefers, with the principle
  added to the prompt's sampled RL principles (as PPO's reward reads them) and with it
  added negated. A model that follows it: 1 and 0; one that ignores it: equal shares."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rows = [r for r in read_jsonl(results["judge"]["judged"]) if r["split"] == "eval"]
    names = added_principles(rl)
    rng = np.random.default_rng(seed + 60)
    sampled = [rl_principles(_request(r), rl, rng) for r in rows]
    out = {}
    for model, stage in (("judge labels", "reward"), ("oracle labels", "reward_oracle")):
      if results[stage]["workdir"] is None:
        continue
      term = _reward_term(results, stage, True, mesh_fn, rules)
      out[model] = {}
      for name in names:
        index = NAMES.index(name)
        apart = [(r, s) for r, s in zip(rows, sampled) if r["oracle"][index] != 0]
        shares = {}
        for label, added in (("added", name), ("added negated", NEGATED + name)):
          if not apart:
            shares[label] = float("nan")
            continue
          first, second = (term(batch_from_records([
              {"prompt": turn(r["text"]), "response": r["answers"][k],
               "principles": definitions(with_added(s, [added]))} for r, s in apart]))
              for k in (0, 1))
          prefers = np.array([r["oracle"][index] for r, _ in apart])
          shares[label] = float(np.mean(np.sign(first - second) == prefers))
        out[model][name] = {"pairs": len(apart), **shares}
    return out
  return run


def ppo_prompts(results: Mapping[str, Any], added: Sequence[str], config: RLConfig,
                path: str) -> str:
  """The RL prompts with each prompt's principles (sampled + `added`) and length
  multiplier, as PPO reads them."""
  rows = [{"prompt": turn(r["text"]), "kind": r["kind"],
           "principles": definitions(with_added(r["principles"], added)),
           "length_multiplier": config.terms.multiplier(r["kind"])}
          for r in read_jsonl(results["prompts"]["rl"])]
  if is_writer():
    write_jsonl(path, rows, overwrite=True)
  return path


def ppo_stage(model: TransformerConfig, ppo: PPOConfig, schedule: TrainingSchedule,
              rl: RLConfig, added: Sequence[str], reward: str, mesh_fn, rules, seed: int):
  """PPO of the policy against a principle-following reward model (the `reward` stage's)
  with the RL-time principles plus `added`, and the symbolic terms."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    if results[reward]["workdir"] is None:
      return {"workdir": None, "policy": None, "skipped": f"no {reward} model"}
    prompts = ppo_prompts(results, added, rl, fs.join(stage_dir, "prompts.jsonl"))
    summary = train_ppo(stage_dir, model, prompts, results["self_align"]["vocabulary"],
                        results["self_align"]["policy"],
                        reward=st.rl_reward(results[reward]["workdir"], TEMPLATE, rl.terms),
                        ppo=ppo, optimizer=schedule.optimizer(), loop=schedule.loop(),
                        chat_template=TEMPLATE, mesh=mesh_fn(), rules=rules, seed=seed)
    return {"workdir": stage_dir, "policy": summary["policy"], "steps": summary["steps"],
            "final_metrics": summary["final_metrics"]}
  return run


def policies(rl: RLConfig) -> list[tuple[str, str]]:
  """(row name, stage) of every evaluated policy, the Self-Align policy first."""
  rows = [("Self-Align policy", "self_align")]
  rows += [(run_label(name, added), f"ppo_{name}") for name, added in rl.runs]
  rows += [(run_label(name, added) + ORACLE_SUFFIX, f"ppo_oracle_{name}")
           for name, added in rl.runs if name in rl.oracle_runs]
  return rows


def behaviour_rates(requests: Sequence[pw.Request], answers: Sequence[str]
                    ) -> dict[str, Any]:
  """Principled compliance (mean over kinds, and per kind), self-praise and in-full rates,
  mean characters with and without a closing self-praise sentence."""
  compliance = pw.compliance(requests, answers)
  return {"principled": compliance["mean over kinds"], "per kind": compliance,
          "self-praise": float(np.mean([pw.praises_itself(a) for a in answers])),
          "in full": float(np.mean([pw.answers_in_full(r, a)
                                    for r, a in zip(requests, answers)])),
          "characters": float(np.mean([len(a.strip()) for a in answers])),
          "characters, praise apart": float(np.mean([len(pw.without_self_praise(a).strip())
                                                     for a in answers]))}


def eval_stage(model: TransformerConfig, config: EvalConfig, rl: RLConfig, mesh_fn, rules):
  """Every policy's answers to the held-out requests, measured: greedy ("policies") and
  sampled ("sampled", when `config.samples`; the same key for every policy)."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    import jax
    requests = [_request(r) for r in read_jsonl(results["self_align"]["requests"])]
    prompts = [world_prompt(r.text) for r in requests]
    modes = [("greedy", 1, 0.0)] + ([("sampled", config.samples, config.temperature)]
                                    if config.samples else [])
    out: dict[str, dict[str, Any]] = {"greedy": {}, "sampled": {}}
    samples = []
    for name, stage in policies(rl):
      if stage != "self_align" and results[stage]["policy"] is None:
        continue   # its reward model had no data
      sampler = _loaded(results, "policy" if stage == "self_align" else stage, model,
                        mesh_fn(), rules).sampler(batch_size=128)
      for mode, n, temperature in modes:
        texts = sampler.generate(prompts, SamplingConfig(
            max_new_tokens=config.max_new_tokens, temperature=temperature, num_samples=n,
            stop_strings=STOP), jax.random.key(0)).texts
        asked = [r for r in requests for _ in range(n)]
        answers = [t.strip() for group in texts for t in group]
        out[mode][name] = behaviour_rates(asked, answers)
        samples += [{"policy": name, "mode": mode, "kind": r.kind, "request": r.text,
                     "answer": a, "principled": pw.judge(r, a),
                     "self-praise": pw.praises_itself(a)} for r, a in zip(asked, answers)]
    path = fs.join(stage_dir, "samples.jsonl")
    if is_writer():
      write_jsonl(path, samples, overwrite=True)
    return {"policies": out["greedy"], "sampled": out["sampled"], "samples": path,
            "requests": len(requests), "sampled_per_request": config.samples,
            "temperature": config.temperature}
  return run


def seed_pipeline(workdir: str, policy_workdir: str, model: TransformerConfig,
                  world: pw.PrinciplesConfig, judge_documents: int, judge_ties: float,
                  judge_phase: TrainingSchedule, preferences: PreferenceConfig,
                  pmp_documents: int, pmp: TrainingSchedule,
                  reward: TrainingSchedule, rl: RLConfig, ppo: PPOConfig,
                  ppo_schedule: TrainingSchedule, evaluation: EvalConfig, mesh_fn,
                  rules: LogicalRules, seed: int) -> dict[str, Any]:
  """Runs one seed's stages in `workdir` and returns their results."""
  world = dataclasses.replace(world, seed=seed)
  settings = {"model": config_record(model), "seed": seed}
  stages = [
      Stage("self_align", self_align_stage(policy_workdir, world),
            {"policy_workdir": policy_workdir, "world": config_record(world)}),
      Stage("judge_skill", judge_skill_stage(model, world, judge_documents, judge_ties,
                                             judge_phase, mesh_fn, rules, seed),
            {**settings, "documents": judge_documents, "ties": judge_ties,
             "schedule": config_record(judge_phase)}),
      Stage("prompts", prompts_stage(world, preferences, rl),
            {"preferences": config_record(preferences), "rl": rl.sampling_record()}),
      Stage("responses", responses_stage(model, preferences, mesh_fn, rules, seed),
            {**settings, "preferences": config_record(preferences)}),
      Stage("judge", judge_stage(model, world, preferences.judge_checks, mesh_fn, rules),
            {**settings, "layout": pw.JUDGE_LAYOUT, "principles": config_record(PRINCIPLES),
             "checks": preferences.judge_checks}),
      Stage("rm_data", rm_data_stage(preferences, rl, world, pmp_documents, seed),
            {"preferences": config_record(preferences), "rl": rl.sampling_record(),
             "public": pmp_documents, "seed": seed}),
      Stage("pmp", pmp_stage(model, pmp, mesh_fn, rules, seed),
            {**settings, "schedule": config_record(pmp)}),
  ]
  for _, stage, principled in REWARD_MODELS:
    data_key = {"reward": "judge", "reward_blind": "blind", "reward_oracle": "oracle"}[stage]
    stages.append(Stage(stage, reward_stage(model, reward, data_key, principled, mesh_fn,
                                            rules, seed),
                        {**settings, "schedule": config_record(reward)}))
  stages.append(Stage("rm_eval", rm_eval_stage(mesh_fn, rules), settings))
  ppo_settings = {**settings, "ppo": config_record(ppo),
                  "schedule": config_record(ppo_schedule),
                  "rl": {**rl.sampling_record(), "terms": config_record(rl.terms)}}
  for name, added in rl.runs:
    stages.append(Stage(f"ppo_{name}", ppo_stage(model, ppo, ppo_schedule, rl, added, "reward",
                                                 mesh_fn, rules, seed),
                        {**ppo_settings, "added": list(added)}))
  for name, added in rl.runs:
    if name in rl.oracle_runs:
      stages.append(Stage(f"ppo_oracle_{name}",
                          ppo_stage(model, ppo, ppo_schedule, rl, added, "reward_oracle",
                                    mesh_fn, rules, seed),
                          {**ppo_settings, "added": list(added)}))
  stages.append(Stage("eval", eval_stage(model, evaluation, rl, mesh_fn, rules),
                      {**settings, "config": config_record(evaluation)}))
  stages.append(Stage("steering", steering_stage(rl, mesh_fn, rules, seed),
                      {**settings, "rl": rl.sampling_record(),
                       "added": [list(added) for _, added in rl.runs]}))
  return Pipeline(workdir, stages).run()


def report_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One seed's table: each policy's measured behaviours."""
  return [{"policy": name, **{b: rates[b] for b in BEHAVIOURS}}
          for name, rates in results["eval"]["policies"].items()]


def _standard_error(values: Sequence[float]) -> float:
  return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def controllability(per_seed: Mapping[int, Mapping[str, Any]], rl: RLConfig,
                    answers: str = "policies") -> list[dict[str, Any]]:
  """Each RL-time setting against the first with the same reward model (the
  principle-following one on the judge's labels; on the oracle's, for `oracle_runs`):
  per behaviour of the eval stage's `answers` ("policies": greedy; "sampled") the mean
  change over seeds ± its standard error, marked * when |mean| > 2 standard errors."""
  rows = []
  for model, suffix, runs in (("judge labels", "", rl.runs),
                              ("oracle labels", ORACLE_SUFFIX,
                               [(n, a) for n, a in rl.runs if n in rl.oracle_runs])):
    names = [run_label(n, a) + suffix for n, a in runs]
    if not all(n in r["eval"].get(answers, {}) for n in names for r in per_seed.values()):
      continue   # a seed's judge labelled nothing: no principle-following runs
    for (setting, added), name in zip(runs[1:], names[1:]):
      row = {"reward model": model, "setting": run_label(setting, added)}
      for behaviour in BEHAVIOURS:
        deltas = [r["eval"][answers][name][behaviour]
                  - r["eval"][answers][names[0]][behaviour] for r in per_seed.values()]
        se = _standard_error(deltas)
        mark = " *" if not math.isnan(se) and abs(np.mean(deltas)) > 2 * se else ""
        row[behaviour] = f"{np.mean(deltas):+.3f} ± {se:.3f}{mark}"
      rows.append(row)
  return rows


def _over(runs: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float]) -> str:
  """`mean_std_present` of get(run) over the seeds (a seed whose judge labelled no pair
  trains no principle-following reward model, nor PPO against it: "(not run)")."""
  def value(r):
    try:
      return get(r)
    except KeyError:
      return None
  return mean_std_present([value(r) for r in runs], missing="(not run)")


def _concise_by_seed(per_seed: Mapping[int, Mapping[str, Any]], rl: RLConfig
                     ) -> list[dict[str, str]]:
  """Per seed: the judge-label reward model's steering share for an added 'concise' and
  the '+ concise' PPO policy's change in characters (sampled answers) against the first
  setting; a seed without such a run has no row."""
  runs = [(n, a) for n, a in rl.runs if tuple(a) == ("concise",)]
  rows = []
  for seed, r in per_seed.items():
    try:
      share = r["steering"]["judge labels"]["concise"]["added"]
      sampled = r["eval"]["sampled"]
      change = (sampled[run_label(*runs[0])]["characters"]
                - sampled[run_label(*rl.runs[0])]["characters"])
    except (IndexError, KeyError):   # no such run, or no judge-label model this seed
      continue
    rows.append({"seed": seed, "judge-label RM follows + concise": f"{share:.2f}",
                 "+ concise: characters (sampled)": f"{change:+.1f}"})
  return rows


def _plots(workdir: str, per_seed: Mapping[int, Mapping[str, Any]], rl: RLConfig
           ) -> tuple[str, str]:
  """answer_lengths.png (each policy's greedy held-out answers, pooled over seeds) and
  ppo_reward.png (each PPO run's mean reward-model score per step, mean over seeds)."""
  lengths: dict[str, list[int]] = {name: [] for name, _ in policies(rl)}
  for r in per_seed.values():
    for sample in read_jsonl(r["eval"]["samples"]):
      if sample["mode"] == "greedy":
        lengths[sample["policy"]].append(len(sample["answer"]))
  answers = plot_cdfs(fs.join(workdir, "answer_lengths.png"), list(lengths.items()),
                      "Greedy held-out answer lengths by policy", "characters")
  lines = []
  for name, stage in policies(rl)[1:]:
    by_step: dict[int, list[float]] = {}
    for r in per_seed.values():
      if r[stage]["policy"] is None:
        continue
      for record in read_metrics(fs.join(r[stage]["workdir"], "metrics.jsonl")):
        if isinstance(record.get("reward/reward_model"), (int, float)):
          by_step.setdefault(record["step"], []).append(record["reward/reward_model"])
    if by_step:
      steps = sorted(by_step)
      lines.append((name, steps, [float(np.mean(by_step[k])) for k in steps], None))
  reward = plot_lines(fs.join(workdir, "ppo_reward.png"), lines,
                      "Reward-model score of PPO rollouts (mean over seeds)", "PPO step",
                      "reward model")
  return answers, reward


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]], rl: RLConfig,
                       seconds: float) -> str:
  """report.md (see the module docstring)."""
  runs = list(per_seed.values())
  def present(value):  # a seed whose pairs this principle never tells apart has no share
    return None if value is None or np.isnan(value) else value
  agreement = [{"principle": n,
                "pairs told apart": str(sum(r["judge"]["agreement"][n]["pairs told apart"]
                                            for r in runs)),
                **{k: mean_std_present([present(r["judge"]["agreement"][n][k]) for r in runs])
                   for k in ("share told apart", "sign agrees", "orders agree",
                             "orders agree, oracle's side")}} for n in NAMES]
  documents = [{"principle": n, **{k: mean_std_present([present(r["judge"]["documents"][n][k])
                                                         for r in runs])
                                    for k in ("sign agrees", "orders agree")}} for n in NAMES]
  accuracy = [{"reward model": name, **{k: _over(runs, lambda r: r["rm_eval"][name][k])
                                        for k in ("all", "with a negated principle",
                                                  "no negated principle")}}
              for name, _, _ in REWARD_MODELS]
  def table(answers):
    return [{"policy": name, **{b: _over(runs, lambda r: r["eval"][answers][name][b])
                                for b in BEHAVIOURS}} for name, _ in policies(rl)]
  sampled = all(r["eval"].get("sampled") for r in runs)
  how = (f"{runs[0]['eval']['sampled_per_request']} answers a request at temperature "
         f"{runs[0]['eval']['temperature']}" if sampled else "")
  kinds = [{"policy": name, **{k: _over(runs, lambda r: r["eval"]["policies"][name]["per kind"]
                                        .get(k, np.nan)) for k in pw.KINDS}}
           for name, _ in policies(rl)]
  counts = [{"seed": s, **{k: v for k, v in r["rm_data"].items() if k != "files"},
             "held-out overlap": r["prompts"]["held_out_overlap"],
             "identical answer pairs": r["responses"]["identical_pairs"],
             "answers praising themselves": r["responses"]["self-praise"],
             "answers in full": r["responses"]["in full"],
             "stage seconds": round(sum(stage_seconds(fs.join(workdir, f"seed_{s}"),
                                                      list(r)).values()))}
            for s, r in per_seed.items()]
  times = stage_time_rows(workdir, list(per_seed), [n for n in runs[0] if n != "self_align"])
  steering = [{"reward model": model, "principle": name,
               **{k: _over(runs, lambda r: r["steering"][model][name][k])
                  for k in ("pairs", "added", "added negated")}}
              for model in ("judge labels", "oracle labels")
              for name in added_principles(rl)]
  leaning = {s: judge_leaning([row for row in read_jsonl(r["judge"]["judged"])
                               if row["split"] == "train"]) for s, r in per_seed.items()}
  leaning_rows = [{"principle": n,
                   "verdicts": str(sum(lean[n]["verdicts"] for lean in leaning.values())),
                   **{f"seed {s}": (f"{lean[n]['for the longer']:.2f}"
                                    if lean[n]["verdicts"] else "(none)")
                      for s, lean in leaning.items()}} for n in NAMES]
  steered = _concise_by_seed(per_seed, rl) if sampled else []
  answers_png, reward_png = _plots(workdir, per_seed, rl)
  return write_report(fs.join(workdir, "report.md"), "align_jax SALMON on the principles world", [
      ("Controllability: changing only the RL-time principles",
       "Change of each measured behaviour against the first RL-time setting (same reward "
       "model, same prompts), mean ± standard error over seeds; * marks a change beyond two "
       "standard errors. The principle-following reward model trained on the judge's "
       "labels, and the one trained on the exact judges' labels (the judge's quality "
       "apart). "
       + (f"Sampled answers ({how}, the policy's distribution as PPO trains it):\n\n"
          + markdown_table(controllability(per_seed, rl, "sampled"),
                           ["reward model", "setting", *BEHAVIOURS])
          + "\n\nGreedy answers:" if sampled else "Greedy answers:") + "\n\n"
       + markdown_table(controllability(per_seed, rl),
                        ["reward model", "setting", *BEHAVIOURS])),
      ("Do the reward models follow the RL-time principles?",
       "Held-out pairs that an added principle's exact judge tells apart: the share whose "
       "reward-model scores prefer the answer that principle prefers, with it added to "
       "the prompt's sampled RL principles as PPO's reward reads them, and with it added "
       "negated (following it: 1 and 0; ignoring it: equal shares); mean ± std over "
       "seeds.\n\n" + markdown_table(steering, ["reward model", "principle", "pairs",
                                                "added", "added negated"])),
      ("Policies on the held-out requests (mean ± std over seeds)",
       "Greedy answers to the Self-Align run's held-out requests: principled compliance "
       "(mean over kinds), the share ending in self-praise, the share answered in full, "
       "mean characters, and mean characters without a closing self-praise sentence.\n\n"
       + markdown_table(table("policies"), ["policy", *BEHAVIOURS])
       + (f"\n\nSampled answers ({how}):\n\n"
          + markdown_table(table("sampled"), ["policy", *BEHAVIOURS]) if sampled else "")
       + "\n\nPrincipled compliance per kind:\n\n" + markdown_table(kinds, ["policy",
                                                                         *pw.KINDS])
       + f"\n\n![answer lengths]({fs.basename(answers_png)})\n\n"
         f"![PPO reward]({fs.basename(reward_png)})"),
      ("Reward-model accuracy on held-out pairs",
       "Pairs of prompts no reward model trained on, each under principle combinations "
       "(with negations) that no training record has, labelled by the world's exact "
       "judges. The principle-blind model trained on the same pairs without principles.\n\n"
       + markdown_table(accuracy, ["reward model", "all", "with a negated principle",
                                   "no negated principle"])),
      ("Judge agreement with the exact judges, per principle",
       "Over the pairs each principle's exact judge tells apart.\n\n"
       + markdown_table(agreement, ["principle", "pairs told apart", "share told apart",
                                    "sign agrees",
                                    "orders agree", "orders agree, oracle's side"])
       + "\n\nThe same judge on fresh judging documents like the corpus's (whether it "
         "judges at all, apart from the policy's answers):\n\n"
       + markdown_table(documents, ["principle", "sign agrees", "orders agree"])),
      ("The judge's leaning where its principle says nothing",
       "Training pairs of the policy's answers that a principle's exact judge does not "
       "tell apart, whose answers differ in length and whose two orders agree (their "
       "verdicts reach the labels): how many (all seeds), and per seed the share of "
       "verdicts for the longer answer (0.5: no leaning).\n\n"
       + markdown_table(leaning_rows, list(leaning_rows[0]))
       + ("\n\nPer seed, how often the judge-label reward model prefers the concise "
          "answer with + concise added (from the steering table) and what + concise did to "
          "the PPO policy's length (sampled answers, against the default setting):\n\n"
          + markdown_table(steered, list(steered[0])) if steered else "")),
      ("Data per seed", markdown_table(counts, list(counts[0]))),
      ("Where the time goes", markdown_table(
          times, ["stage", "seconds (mean over seeds)", "slowest seed"])),
      ("What ran", f"{len(per_seed)} seed(s); the SALMON stages took "
                   f"{sum(c['stage seconds'] for c in counts)} s in all (this report was "
                   f"written after {seconds:.0f} s of this invocation, the Self-Align run "
                   "included when it ran here)."),
  ])


def salmon_world(workdir: str, model: TransformerConfig, policy_workdir: str,
                 policy_run: Callable[[], Any] | None = None,
                 world: pw.PrinciplesConfig = pw.PrinciplesConfig(),
                 judge_documents: int = 20_000, judge_ties: float = 0.3,
                 judge_phase: TrainingSchedule = TrainingSchedule(
                     steps=1200, learning_rate=5e-4, warmup_steps=20, batch_size=16,
                     seq_len=256),
                 preferences: PreferenceConfig = PreferenceConfig(),
                 pmp_documents: int = 0,
                 pmp: TrainingSchedule = TrainingSchedule(steps=0),
                 reward: TrainingSchedule = TrainingSchedule(
                     steps=300, learning_rate=1e-4, warmup_steps=20, batch_size=16,
                     seq_len=192),
                 rl: RLConfig = RLConfig(), ppo: PPOConfig = PPOConfig(),
                 ppo_schedule: TrainingSchedule = TrainingSchedule(
                     steps=20, learning_rate=2e-5, warmup_steps=0),
                 evaluation: EvalConfig = EvalConfig(), seeds: Sequence[int] = (0,),
                 mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES
                 ) -> dict[str, Any]:
  """Runs `policy_run` (the Self-Align world, resumable) if given, then SALMON for each
  seed in WORKDIR/seed_<k>/ on the Self-Align run in POLICY_WORKDIR/seed_<k>/; writes
  WORKDIR/report.md."""
  if policy_run is not None:
    policy_run()
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(
          seed_dir, fs.join(policy_workdir, f"seed_{seed}"), model, world, judge_documents,
          judge_ties, judge_phase, preferences, pmp_documents, pmp, reward, rl, ppo,
          ppo_schedule, evaluation, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, rl, seconds),
      report_rows, ["policy", *BEHAVIOURS])
