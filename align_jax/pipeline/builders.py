"""Stage builders every method shares: a vocabulary, a training run, a trained run back.

Each builder returns `fn(stage_dir, results) -> result` for a `Stage`; results name
their outputs (files, run directories) so later stages can find them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.data.vocab import train_sentencepiece
from align_jax.models import TransformerConfig
from align_jax.pipeline.stages import is_writer
from align_jax.training import DataConfig, LoopConfig, OptimizerConfig, train_lm
from align_jax.training.runs import LoadedRun, load_run


@dataclasses.dataclass(frozen=True)
class TrainingSchedule:
  """Steps and optimisation settings of one training stage."""
  steps: int = 1000
  learning_rate: float = 1e-3
  warmup_steps: int = 50
  batch_size: int = 32
  seq_len: int = 256
  weight_decay: float = 0.0
  checkpoint_every: int = 200

  def optimizer(self) -> OptimizerConfig:
    return OptimizerConfig(learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
                           total_steps=self.steps, weight_decay=self.weight_decay)

  def loop(self) -> LoopConfig:
    return LoopConfig(total_steps=self.steps, checkpoint_every=self.checkpoint_every)


def vocabulary_stage(vocab_size: int, corpus_stage: str = "world", **options: Any):
  """Trains a sentencepiece vocabulary on results[corpus_stage]["vocab_corpus"] (a jsonl
  of {"text"}); extra trainer options (e.g. split_digits=True) pass through."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    prefix = fs.join(stage_dir, "spm")
    if is_writer() and not fs.exists(prefix + ".model"):
      texts = [r["text"] for r in read_jsonl(results[corpus_stage]["vocab_corpus"])]
      train_sentencepiece(texts, prefix, vocab_size,
                          extra_options={"hard_vocab_limit": False, **options})
    return {"model": prefix + ".model"}
  return run


def training_stage(model: TransformerConfig, schedule: TrainingSchedule, kind: str,
                   data_key: str, init_stage: str | None, chat_template: str, mesh_fn, rules,
                   seed: int, data_stage: str = "world"):
  """Trains on the file results[data_stage][data_key], from init_stage's run if given."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    data = DataConfig(kind=kind, train_files=(results[data_stage][data_key],),
                      chat_template=chat_template, batch_size=schedule.batch_size,
                      seq_len=schedule.seq_len, seed=seed)
    init_from = results[init_stage]["workdir"] if init_stage else None
    summary = train_lm(stage_dir, model, data, results["vocabulary"]["model"],
                       schedule.optimizer(), schedule.loop(), init_from=init_from,
                       mesh=mesh_fn(), rules=rules, seed=seed)
    return {"workdir": stage_dir, "final_loss": summary["final_metrics"].get("loss"),
            "steps": summary["steps"]}
  return run


def trained_run(results: Mapping[str, Any], stage: str, model: TransformerConfig, mesh,
                rules) -> LoadedRun:
  """The model a training (or PPO) stage left, loaded with the pipeline's vocabulary."""
  entry = results[stage]
  return load_run(entry.get("policy", entry["workdir"]), config=model,
                  vocabulary=results["vocabulary"]["model"], mesh=mesh, rules=rules)
