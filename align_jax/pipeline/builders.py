"""Stage builders every method shares: a vocabulary, a training run, a trained run back.

Each builder returns `fn(stage_dir, results) -> result` for a `Stage`; results name
their outputs (files, run directories) so later stages can find them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.data.vocab import train_sentencepiece
from align_jax.models import TransformerConfig
from align_jax.pipeline.stages import is_writer
from align_jax.training import DataConfig, LoopConfig, OptimizerConfig, train_lm
from align_jax.training.checkpoints import RECORD_IF_SET
from align_jax.training.runs import LoadedRun, load_run


@dataclasses.dataclass(frozen=True)
class TrainingSchedule:
  """Steps, optimisation and batch settings of one training stage. `pad_to_multiple_of`:
  cut each training batch after its longest row (`DataConfig.pad_to_multiple_of`); left
  out of the stage's settings record while None, so existing runs still resume."""
  steps: int = 1000
  learning_rate: float = 1e-3
  warmup_steps: int = 50
  batch_size: int = 32
  seq_len: int = 256
  weight_decay: float = 0.0
  checkpoint_every: int = 200
  pad_to_multiple_of: int | None = dataclasses.field(default=None,
                                                     metadata={RECORD_IF_SET: True})

  def data(self, kind: str, train_files: Sequence[str], **options: Any) -> DataConfig:
    """The stage's `DataConfig` for `train_files`: this schedule's batch size, row length
    and cutting, and `options` (chat_template, seed, eval_files, truncate, ...)."""
    return DataConfig(kind=kind, train_files=tuple(train_files), batch_size=self.batch_size,
                      seq_len=self.seq_len, pad_to_multiple_of=self.pad_to_multiple_of,
                      **options)

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
    data = schedule.data(kind, (results[data_stage][data_key],), chat_template=chat_template,
                         seed=seed)
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
