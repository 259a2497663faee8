"""SALMON on an imported Hugging Face model (the Dromedary-2 recipe): judge -> principle-
following reward model -> PPO with RL-time principles.

  python -m align_jax.main --gin_file=gin/models/llama2_7b.gin \
    --gin_file=gin/methods/salmon/dromedary2.gin --gin.WORKDIR="'runs/dromedary2'" \
    --gin.BASE_MODEL="'path/to/hf_model'" --gin.POLICY="'runs/dromedary/engrave'" \
    --gin.PREFERENCE_PROMPTS="'prefs.jsonl'" --gin.RL_PROMPTS="'rl.jsonl'"

Stages in WORKDIR/ (each resumable):

  responses  two answers per preference prompt ({"prompt"} lines) from the policy (an
             align_jax run or a Hugging Face directory; default the base model), T=0.7,
             written through the shared resumable generation;
  judge      the base model judges every pair under every training principle
             (`principles.load_principles`: the project's file or the user's), in both
             orders (`judge.JUDGE_TEMPLATE`);
  rm_data    `passes` labelling passes (`labels.label_pair`: k ~ Geometric(0.2)
             principles, negations, 10% noise; an answer in another language than the
             prompt loses, by langdetect; a boilerplate disclaimer loses with p = 0.5),
             and normalisation samples with RL principles;
  pmp        optional preference-model pre-training on public data (HH-RLHF and SHP
             files, `align_jax.data.preferences`), from the base model;
  reward     the principle-following reward model (from `pmp` when it ran, else the
             base model), normalised on the policy's answers;
  ppo        PPO of the policy on the RL prompts ({"prompt", "kind"?} lines), each with
             the RL-time principles ("use": "rl") and `sampled` training principles
             drawn by weight (`matching_weight` for one naming the prompt's kind), the
             symbolic terms and the missing-EOS penalty.

WORKDIR/report.md: the stage counts and the reward model's training.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.data.preferences import read_hh_rlhf, read_shp
from align_jax.methods.salmon import judge as jd
from align_jax.methods.salmon import labels as lb
from align_jax.methods.salmon import stages as st
from align_jax.methods.salmon.principles import SalmonPrinciple, load_principles
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import Pipeline, Stage, TrainingSchedule, is_writer
from align_jax.pipeline.generation import generate_to_jsonl, prompt_renderer
from align_jax.pipeline.reports import markdown_table, write_report
from align_jax.ppo import PPOConfig, train_ppo
from align_jax.rewards.terms import detect_language
from align_jax.sampling import SamplingConfig
from align_jax.training.checkpoints import config_record
from align_jax.training.runs import load_run, model_for

# Boilerplate disclaimers (an answer that opens by disowning itself), case-insensitive.
DISCLAIMERS = (r"\bas an ai\b", r"\bas a (large )?language model\b",
               r"\bi am (just|only) an? (ai|program|language model|assistant)\b")


def has_disclaimer(text: str) -> bool:
  return any(re.search(p, text, re.IGNORECASE) for p in DISCLAIMERS)


def other_language(prompt: str, answer: str) -> bool:
  """Whether an answer is in another language than its prompt (both detected)."""
  asked, answered = detect_language(prompt), detect_language(answer)
  return asked is not None and answered is not None and asked != answered


@dataclasses.dataclass(frozen=True)
class SalmonFiles:
  """The user's input: preference and RL prompts, principles (None: the project's),
  public preference data for pre-training (empty: no pre-training)."""
  preference_prompts: str = ""
  rl_prompts: str = ""
  principles: str | None = None
  hh_rlhf: tuple[str, ...] = ()
  shp: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Dromedary2Config:
  """Sampling and labelling: two answers per prompt (`temperature`, `max_new_tokens`),
  `passes` labelling passes (`labels`), `sampled` training principles per RL prompt
  (`matching_weight` for one naming the prompt's kind), `shp_min_ratio`."""
  temperature: float = 0.7
  max_new_tokens: int = 256
  passes: int = 4
  labels: lb.LabelConfig = lb.LabelConfig()
  sampled: int = 3
  matching_weight: float = 3.0
  shp_min_ratio: float = 2.0


def rl_principle_texts(record: Mapping[str, Any], principles: Sequence[SalmonPrinciple],
                       config: Dromedary2Config, rng: np.random.Generator) -> list[str]:
  """A prompt's RL-time principles (all "rl" ones) and `sampled` drawn "train" ones."""
  pool = [p for p in principles if p.use == "train"]
  kind = record.get("kind")
  drawn = st.draw_principles([p.name for p in pool],
                             [config.matching_weight if kind in p.kinds else 1.0 for p in pool],
                             config.sampled, rng)
  by_name = {p.name: p for p in principles}
  return ([p.principle.positive for p in principles if p.use == "rl"]
          + [by_name[n].principle.positive for n in drawn])


def salmon_dromedary2(workdir: str, model: TransformerConfig, base_model: str,
                      policy: str | None = None, files: SalmonFiles = SalmonFiles(),
                      config: Dromedary2Config = Dromedary2Config(),
                      pmp: TrainingSchedule = TrainingSchedule(
                          steps=1000, learning_rate=3e-5, batch_size=64, seq_len=1024),
                      reward: TrainingSchedule = TrainingSchedule(
                          steps=1000, learning_rate=3e-5, batch_size=64, seq_len=1024),
                      terms: st.SymbolicTerms = st.SymbolicTerms(), ppo: PPOConfig = PPOConfig(),
                      ppo_schedule: TrainingSchedule = TrainingSchedule(
                          steps=100, learning_rate=2e-5, warmup_steps=0),
                      chat_template: str | None = "plain", vocabulary: str | None = None,
                      sampler_batch_size: int = 64, seed: int = 0, mesh: Mesh | None = None,
                      rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the stages in WORKDIR and writes WORKDIR/report.md (see the module docstring).

  model: the runtime fields for the imported model (its shape is the checkpoint's);
  base_model: a Hugging Face directory (the judge and the reward models' backbone);
  policy: the model PPO trains (None: the base model); vocabulary: None for the base
  model's tokenizer.
  """
  for name in ("preference_prompts", "rl_prompts"):
    if not getattr(files, name):
      raise ValueError(f"SalmonFiles.{name} is required: a jsonl file of prompt records")
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  vocab_path = vocabulary or base_model
  policy = policy or base_model
  principles = load_principles(files.principles)
  training = [p.principle for p in principles if p.use == "train"]
  settings = {"base_model": base_model, "policy": policy, "vocabulary": vocab_path,
              "seed": seed, "model": config_record(model), "chat_template": chat_template,
              "config": config_record(config)}

  def loaded(path: str):
    return load_run(path, config=model_for(path, model), vocabulary=vocab_path, mesh=mesh_fn(),
                    rules=rules)

  def responses(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    run = loaded(policy)
    path = fs.join(stage_dir, "responses.jsonl")

    def pair(record, completions):
      return {"prompt": record["prompt"], "answers": [c["text"] for c in completions],
              "finished": [c["finished"] for c in completions]}

    stats = generate_to_jsonl(
        path, list(read_jsonl(files.preference_prompts)), prompt_renderer(run.vocab,
                                                                          chat_template),
        run.sampler(sampler_batch_size), SamplingConfig(
            max_new_tokens=config.max_new_tokens, temperature=config.temperature,
            num_samples=2), seed=seed + 40, postprocess=pair, desc="answer pairs")
    return {"responses": path, "pairs": stats["rows"]}

  def judge(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rows = list(read_jsonl(results["responses"]["responses"]))
    scores, agree = st.judge_pairs(loaded(base_model).sampler(sampler_batch_size),
                                   [r["prompt"] for r in rows], [r["answers"] for r in rows],
                                   training)
    path = fs.join(stage_dir, "judged.jsonl")
    if is_writer():
      write_jsonl(path, [{**r, "judge": s.tolist(), "agree": a.tolist()}
                         for r, s, a in zip(rows, scores, agree)], overwrite=True)
    return {"judged": path, "orders agree": {p.name: float(agree[:, j].mean())
                                             for j, p in enumerate(training)}}

  def rm_data(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rows = list(read_jsonl(results["judge"]["judged"]))
    dims = jd.dimension_scores(np.array([r["judge"] for r in rows]),
                               np.array([r["agree"] for r in rows]))
    languages = [tuple(other_language(r["prompt"], a) for a in r["answers"]) for r in rows]
    disclaimers = [tuple(has_disclaimer(a) for a in r["answers"]) for r in rows]
    records, unlabelled = st.label_records(rows, dims, training, config.labels, config.passes,
                                           np.random.default_rng(seed + 50),
                                           other_language=languages, disclaimer=disclaimers)
    rng = np.random.default_rng(seed + 52)
    samples = [{"prompt": r["prompt"], "response": a,
                "principles": rl_principle_texts(r, principles, config, rng)}
               for r in rows for a in r["answers"]]
    paths = {"labelled": fs.join(stage_dir, "labelled.jsonl"),
             "samples": fs.join(stage_dir, "samples.jsonl")}
    if is_writer():
      write_jsonl(paths["labelled"], records, overwrite=True)
      write_jsonl(paths["samples"], samples, overwrite=True)
    return {**paths, "records": len(records), "draws without a label": unlabelled,
            "overridden": {k: sum(r["overridden"] == k for r in records)
                           for k in ("language", "disclaimer")}}

  def pretrain_preferences(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    records, counts = [], {}
    for path in files.hh_rlhf:
      rows, counts[path] = read_hh_rlhf(path)
      records += rows
    for path in files.shp:
      rows, counts[path] = read_shp(path, config.shp_min_ratio)
      records += rows
    data = fs.join(stage_dir, "pmp.jsonl")
    if is_writer():
      write_jsonl(data, records, overwrite=True)
    summary = st.train_preferences(stage_dir, model, pmp, [data], vocab_path, base_model,
                                   chat_template, mesh_fn(), rules, seed)
    return {"workdir": stage_dir, "files": counts, "steps": summary["steps"]}

  def reward_model(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    init = results["pmp"]["workdir"] if "pmp" in results else base_model
    return st.train_salmon_reward(stage_dir, model_for(init, model), reward,
                                  [results["rm_data"]["labelled"]],
                                  vocab_path, init, results["rm_data"]["samples"],
                                  chat_template, True, mesh_fn(), rules, seed)

  def rl(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 53)
    prompts = fs.join(stage_dir, "prompts.jsonl")
    if is_writer():
      write_jsonl(prompts, [{**r, "principles": rl_principle_texts(r, principles, config, rng),
                             "length_multiplier": terms.multiplier(r.get("kind"))}
                            for r in read_jsonl(files.rl_prompts)], overwrite=True)
    summary = train_ppo(stage_dir, model_for(policy, model), prompts, vocab_path, policy,
                        reward=st.rl_reward(results["reward"]["workdir"], chat_template, terms),
                        ppo=ppo, optimizer=ppo_schedule.optimizer(), loop=ppo_schedule.loop(),
                        chat_template=chat_template or "plain", mesh=mesh_fn(), rules=rules,
                        seed=seed)
    return {"workdir": stage_dir, "policy": summary["policy"], "steps": summary["steps"],
            "final_metrics": summary["final_metrics"]}

  principle_record = [dataclasses.asdict(p) for p in principles]
  stages = [
      Stage("responses", responses, {**settings, "prompts": files.preference_prompts}),
      Stage("judge", judge, {**settings, "principles": principle_record,
                             "template": jd.JUDGE_TEMPLATE}),
      Stage("rm_data", rm_data, {**settings, "principles": principle_record}),
  ]
  if files.hh_rlhf or files.shp:
    stages.append(Stage("pmp", pretrain_preferences,
                        {**settings, "hh_rlhf": list(files.hh_rlhf), "shp": list(files.shp),
                         "schedule": config_record(pmp)}))
  stages += [
      Stage("reward", reward_model, {**settings, "schedule": config_record(reward)}),
      Stage("ppo", rl, {**settings, "rl_prompts": files.rl_prompts, "terms": config_record(terms),
                        "ppo": config_record(ppo), "schedule": config_record(ppo_schedule)}),
  ]
  results = Pipeline(workdir, stages).run()
  return {"report": write_dromedary2_report(workdir, results), "results": results}


def write_dromedary2_report(workdir: str, results: Mapping[str, Any]) -> str:
  """report.md: the stage counts, the judge's order agreement, the reward model."""
  counts = {"answer pairs": results["responses"]["pairs"],
            "labelled records": results["rm_data"]["records"],
            "draws without a label": results["rm_data"]["draws without a label"],
            **{f"overridden ({k})": v for k, v in results["rm_data"]["overridden"].items()}}
  agree = [{"principle": k, "orders agree": f"{v:.3f}"}
           for k, v in results["judge"]["orders agree"].items()]
  final = results["ppo"]["final_metrics"]
  return write_report(fs.join(workdir, "report.md"), "align_jax SALMON (Dromedary-2 recipe)", [
      ("Stage counts", markdown_table([counts], list(counts))),
      ("Judge: both orders agree, per principle", markdown_table(agree, ["principle",
                                                                         "orders agree"])),
      ("Reward model", markdown_table([{"final loss": results["reward"]["final_loss"],
                                        "steps": results["reward"]["steps"],
                                        "pre-trained on public data": "pmp" in results}],
                                      ["final loss", "steps", "pre-trained on public data"])),
      ("PPO", markdown_table([{"steps": results["ppo"]["steps"],
                               **{k: final[k] for k in ("reward/total", "objective/kl")
                                  if k in final}}],
                             ["steps", *[k for k in ("reward/total", "objective/kl")
                                         if k in final]])),
  ])
