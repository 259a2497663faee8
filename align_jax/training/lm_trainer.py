"""The supervised trainers: language models (pretraining, SFT) and reward models.

`train_lm` is what `gin/runs/pretrain.gin` and `gin/runs/sft.gin` run, and
`train_reward_model` what `gin/runs/reward.gin` runs (the pipelines call both for
their training stages): data from jsonl files or a registered seqio task, a model
initialised randomly, from a Hugging Face checkpoint or from another align_jax run,
full or LoRA fine-tuning, then `train_loop`. Both share one implementation; they
differ in the model (a `Transformer`, or a `TransformerWithHead` whose backbone is
loaded and whose head starts fresh) and in the loss picked by the data kind.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax.data import tasks as task_lib
from align_jax.data.pipeline import BatchIterator
from align_jax.data.vocab import load_vocabulary
from align_jax.models import (Transformer, TransformerConfig, TransformerWithHead,
                              abstract_params, init_params, is_lora_path, merge_lora,
                              merge_params, param_shardings, split_params)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.training.checkpoints import Checkpointer, config_record, restore_params
from align_jax.training.loop import (LoopConfig, batch_shardings, global_batch, init_train_state,
                                     state_shardings, train_loop)
from align_jax.training.losses import lm_loss_sums
from align_jax.training.optimizer import OptimizerConfig, make_optimizer
from align_jax.training.reward import pairwise_loss_sums, process_loss_sums
from align_jax.training.sft import make_train_step


# The loss each data kind trains with (see `align_jax.training.losses` and `.reward`).
LOSSES = {"lm": lm_loss_sums, "sft": lm_loss_sums, "preference": pairwise_loss_sums,
          "process": process_loss_sums}
REWARD_KINDS = ("preference", "process")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training batches come from and how they are shaped.

  kind: 'lm' (records {"text"}), 'sft' ({"prompt", "response"} or {"messages"}) for
    `train_lm`; 'preference' ({"prompt", "chosen", "rejected"}: a pairwise reward
    model) or 'process' ({"prompt", "steps", "labels"} or {"prompt", "response",
    "label"}: a process / outcome reward model) for `train_reward_model`.
  train_files / eval_files: jsonl files (see `align_jax.data.tasks` for schemas);
    or `task`: the name of an already registered seqio task (train split 'train',
    eval split `eval_split`).
  batch_size: global rows per step; seq_len: tokens per row (packed when `pack`).
  truncate: 'right', 'left' or 'drop' for sequences longer than a row.
  """
  kind: str = "lm"
  train_files: tuple[str, ...] = ()
  eval_files: tuple[str, ...] = ()
  task: str | None = None
  eval_split: str = "validation"
  chat_template: str | None = "plain"
  batch_size: int = 32
  seq_len: int = 256
  pack: bool = True
  truncate: str = "right"
  seed: int = 0
  eval_batches: int = 8

  def __post_init__(self):
    if self.kind not in LOSSES:
      raise ValueError(f"DataConfig.kind must be one of {sorted(LOSSES)}, got {self.kind!r}")
    if bool(self.train_files) == bool(self.task):  # checked before normalising the tuples
      raise ValueError("DataConfig needs exactly one of train_files (jsonl) or task (a "
                       "registered seqio task name)")
    for name in ("train_files", "eval_files"):  # one path, or several
      value = getattr(self, name)
      object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))


def vocabulary_record(vocab) -> dict[str, Any]:
  """Facts that identify a vocabulary, stored with checkpoints and checked on load."""
  raw = getattr(vocab, "sp_model", None)
  fingerprint = (hashlib.sha256(raw).hexdigest() if isinstance(raw, bytes)
                 else getattr(vocab, "_fingerprint", None))
  return {"vocab_size": int(vocab.vocab_size), "eos_id": int(vocab.eos_id),
          "fingerprint": fingerprint}


def _register_tasks(name: str, data: DataConfig, vocab) -> tuple[str, str | None, str]:
  """(task name, eval split or None, train split)."""
  if data.task:
    import seqio
    splits = seqio.get_mixture_or_task(data.task).splits
    if "train" not in splits:
      raise ValueError(f"seqio task {data.task!r} has no 'train' split (splits: {list(splits)})")
    return data.task, (data.eval_split if data.eval_split in splits else None), "train"
  files = {"train": list(data.train_files)}
  if data.eval_files:
    files["validation"] = list(data.eval_files)
  template = data.chat_template if data.kind != "lm" else None
  task_lib.register_jsonl_task(name, files, vocab, kind=data.kind, chat_template=template)
  return name, ("validation" if data.eval_files else None), "train"


def _is_hf_dir(path: str) -> bool:
  return os.path.exists(os.path.join(path, "config.json"))


def checkpoints_dir(path: str) -> str:
  """A previous run's WORKDIR or its checkpoints folder."""
  candidate = os.path.join(path, "checkpoints")
  return candidate if os.path.isdir(candidate) else path


def restore_run_params(run_dir: str, module, mesh: Mesh, rules: LogicalRules,
                       vocab_record: dict | None = None) -> Any:
  """The parameters of `module` (a Transformer or TransformerWithHead) from another run's
  latest checkpoint (run_dir: its WORKDIR or checkpoints folder), placed on their
  shardings; the run's model config (and vocabulary, if given) must match.

  A run that trained LoRA adapters stored only what it trained (the adapters, and a
  reward model's head); for a LoRA-free `module` its base is loaded from the `init_from`
  in its record and the adapters are folded into the base kernels.
  """
  record = read_run_record(run_dir)
  if (record.get("model_config") or {}).get("lora_rank", 0) > 0 and module.config.lora_rank == 0:
    return _restore_lora_run(run_dir, record, module, mesh, rules, vocab_record)
  params, _ = restore_params(checkpoints_dir(run_dir), placed_abstract_params(module, mesh, rules),
                             _expected_record(module.config, vocab_record))
  return params


def _expected_record(config: TransformerConfig, vocab_record: dict | None) -> dict[str, Any]:
  expected = {"model_config": config_record(config)}
  if vocab_record is not None:
    expected["vocabulary"] = vocab_record
  return expected


def placed_abstract_params(module, mesh: Mesh, rules: LogicalRules) -> Any:
  """Shapes and dtypes of `module`'s parameters, each with its sharding (a restore target)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_params(module), param_shardings(module, mesh, rules))


def read_run_record(run_dir: str) -> dict[str, Any]:
  """The record (model config, vocabulary, ...) stored with a run's latest checkpoint."""
  checkpointer = Checkpointer(checkpoints_dir(run_dir), async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"{run_dir}: no checkpoint found")
    return checkpointer.read_record(step)
  finally:
    checkpointer.close()


def _restore_lora_run(run_dir: str, record: dict, module, mesh: Mesh, rules: LogicalRules,
                      vocab_record: dict | None) -> Any:
  init_from = record.get("init_from")
  if not init_from:
    raise ValueError(f"{run_dir} trained LoRA adapters, but its checkpoint does not record the "
                     "base model it started from (init_from); retrain it with this version "
                     "of align_jax or export it merged (export_hf=True)")
  if not os.path.exists(init_from):
    raise FileNotFoundError(f"{run_dir} trained LoRA adapters over {init_from}, which no longer "
                            "exists; the base model is needed to restore it")
  stored = record["model_config"]
  lora = dataclasses.replace(module.config, lora_rank=stored["lora_rank"],
                             lora_alpha=stored["lora_alpha"],
                             lora_targets=tuple(stored["lora_targets"]))
  head = isinstance(module, TransformerWithHead)
  vocab_record = vocab_record if vocab_record is not None else record.get("vocabulary")
  _, base = load_initial_params(init_from, module.config, mesh, rules, seed=0,
                                vocab_record=None if _is_hf_dir(init_from) else vocab_record)
  abstract = placed_abstract_params(TransformerWithHead(lora) if head else Transformer(lora),
                                    mesh, rules)
  trained, _ = restore_params(checkpoints_dir(run_dir),
                              split_params(abstract, _trains_with_lora(head))[0],
                              _expected_record(lora, vocab_record))
  full = merge_params(trained, {"backbone": base} if head else base)
  return merge_lora(lora, full)[1]


def load_initial_params(init_from: str | None, config: TransformerConfig, mesh: Mesh,
                        rules: LogicalRules, seed: int, vocab_record: dict | None = None
                        ) -> tuple[TransformerConfig, Any]:
  """Parameters to start from: random, a Hugging Face directory, or an align_jax run."""
  if init_from is None:
    return config, init_params(Transformer(config), jax.random.key(seed), mesh, rules)
  if _is_hf_dir(init_from):
    from align_jax.hf import load_checkpoint
    keep = {k: getattr(config, k) for k in ("dtype", "param_dtype", "scan_layers",
                                              "remat_policy", "lora_rank", "lora_alpha",
                                              "lora_targets")}
    return load_checkpoint(init_from, mesh, rules, **keep)
  params = restore_run_params(init_from, Transformer(dataclasses.replace(config, lora_rank=0)),
                              mesh, rules, vocab_record)
  if config.lora_rank > 0:
    from align_jax.models import init_lora_params
    params = merge_params(params, init_lora_params(Transformer(config), jax.random.key(seed),
                                                   mesh, rules))
  return config, params


def _eval_fn(loss_sums, task: str, data: DataConfig, eval_split: str, mesh: Mesh,
             rules: LogicalRules):
  """Mean loss, accuracy and other aux means over the first `data.eval_batches`
  batches of `eval_split`.

  Every host makes the same number of calls: a host whose shard runs out feeds
  batches with zero loss weights, so the sums stay exact and no collective hangs.
  """
  @jax.jit
  def eval_sums(params, frozen, batch):
    full = merge_params(params, frozen) if frozen else params
    total, weight, aux = loss_sums(full, batch)
    return total, weight, aux

  def eval_fn(state, frozen):
    batches = BatchIterator(task, kind=data.kind, batch_size=data.batch_size,
                            seq_len=data.seq_len, split=eval_split, seed=0, pack=data.pack,
                            truncate=data.truncate, num_epochs=1, shuffle=False)
    total = weight = 0.0
    aux_total: dict[str, float] = {}
    template = None
    for _ in range(data.eval_batches):
      batch = next(batches, None)
      if batch is None:
        batch = {k: np.zeros_like(v) for k, v in template.items()}
      template = template or batch
      shardings = batch_shardings(batch, mesh, rules)
      t, w, aux = jax.device_get(eval_sums(state.params, frozen, global_batch(batch, shardings)))
      total, weight = total + t, weight + w
      for k, v in aux.items():
        aux_total[k] = aux_total.get(k, 0.0) + float(v)
    results = {"eval/loss": total / max(weight, 1.0)}
    results.update({"eval/" + ("accuracy" if k == "correct" else k): v / max(weight, 1.0)
                    for k, v in aux_total.items()})
    return results

  return eval_fn


def train_lm(workdir: str, model: TransformerConfig, data: DataConfig, vocabulary: str,
             optimizer: OptimizerConfig = OptimizerConfig(), loop: LoopConfig = LoopConfig(), *,
             init_from: str | None = None, mesh: Mesh | None = None,
             rules: LogicalRules = DEFAULT_RULES, num_micro_batches: int = 1, seed: int = 0,
             export_hf: bool = False) -> dict[str, Any]:
  """Trains a language model in WORKDIR (resuming if it holds checkpoints).

  vocabulary: a sentencepiece .model file or a Hugging Face model directory.
  init_from: None (random), a Hugging Face model directory, or an align_jax WORKDIR
    (its latest checkpoint's parameters; the optimizer starts fresh).
  With `model.lora_rank > 0` only the adapters train; the rest stays frozen.
  Returns a summary: final metrics, the checkpoint folder, the export folder.
  """
  if data.kind not in ("lm", "sft"):
    raise ValueError(f"train_lm trains on DataConfig.kind 'lm' or 'sft', got {data.kind!r}; "
                     "reward data goes to train_reward_model")
  return _train(workdir, model, data, vocabulary, optimizer, loop, init_from=init_from,
                mesh=mesh, rules=rules, num_micro_batches=num_micro_batches, seed=seed,
                export_hf=export_hf, head=False)


def train_reward_model(workdir: str, model: TransformerConfig, data: DataConfig,
                       vocabulary: str, optimizer: OptimizerConfig = OptimizerConfig(),
                       loop: LoopConfig = LoopConfig(), *, init_from: str | None = None,
                       mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                       num_micro_batches: int = 1, seed: int = 0) -> dict[str, Any]:
  """Trains a reward model in WORKDIR: a scalar head on a language model's backbone.

  data.kind 'preference': pairwise Bradley-Terry loss on the score at each answer's
  last token (eval: pair accuracy and margin); 'process': binary cross-entropy at the
  labelled tokens (step ends, or the EOS for an outcome model).
  init_from: the backbone (an align_jax LM run or a Hugging Face directory; None:
  random); the head starts fresh. With LoRA the adapters and the head train.
  """
  if data.kind not in REWARD_KINDS:
    raise ValueError(f"train_reward_model trains on DataConfig.kind {REWARD_KINDS}, got "
                     f"{data.kind!r}")
  return _train(workdir, model, data, vocabulary, optimizer, loop, init_from=init_from,
                mesh=mesh, rules=rules, num_micro_batches=num_micro_batches, seed=seed,
                export_hf=False, head=True)


def fresh_head(module: TransformerWithHead, key: jax.Array, mesh: Mesh,
               rules: LogicalRules) -> Any:
  """Newly initialised parameters of a model's scalar head only (the backbone's
  initialisers are compiled away)."""
  import flax.linen as nn
  from align_jax.models.init import _boxed_init
  shardings = param_shardings(module, mesh, rules)["head"]
  return jax.jit(lambda k: nn.unbox(_boxed_init(module, k))["head"],
                 out_shardings=shardings)(key)


def _trains_with_lora(head: bool):
  return lambda path: is_lora_path(path) or (head and path[0] == "head")


def _train(workdir: str, model: TransformerConfig, data: DataConfig, vocabulary: str,
           optimizer: OptimizerConfig, loop: LoopConfig, *, init_from: str | None,
           mesh: Mesh | None, rules: LogicalRules, num_micro_batches: int, seed: int,
           export_hf: bool, head: bool) -> dict[str, Any]:
  mesh = mesh or create_mesh()
  vocab = load_vocabulary(vocabulary)
  vocab_record = vocabulary_record(vocab)
  if vocab.vocab_size > model.vocab_size:
    raise ValueError(f"vocabulary {vocabulary} has {vocab.vocab_size} tokens but the model's "
                     f"vocab_size is {model.vocab_size}; raise TransformerConfig.vocab_size")
  task_name = "align_jax_" + hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:12]
  task, eval_split, train_split = _register_tasks(task_name, data, vocab)

  init_vocab = vocab_record if init_from and not _is_hf_dir(init_from) else None
  if head and init_from is None:
    config = model
    model_module = TransformerWithHead(config)
    params = init_params(model_module, jax.random.key(seed), mesh, rules)
  else:
    config, params = load_initial_params(init_from, model, mesh, rules, seed, init_vocab)
    model_module = TransformerWithHead(config) if head else Transformer(config)
    if head:
      params = {"backbone": params,
                "head": fresh_head(model_module, jax.random.key(seed + 1), mesh, rules)}
  all_shardings = param_shardings(model_module, mesh, rules)
  if config.lora_rank > 0:
    trainable, frozen = split_params(params, _trains_with_lora(head))
    trainable_shardings = split_params(all_shardings, _trains_with_lora(head))[0]
  else:
    trainable, frozen, trainable_shardings = params, None, all_shardings
  del params

  opt = make_optimizer(optimizer)
  shardings = state_shardings(opt, trainable, trainable_shardings, mesh)
  make_batches = functools.partial(
      BatchIterator, task, kind=data.kind, batch_size=data.batch_size, seq_len=data.seq_len,
      split=train_split, seed=data.seed, pack=data.pack, truncate=data.truncate)
  loss_sums = functools.partial(LOSSES[data.kind], model_module)
  eval_fn = (_eval_fn(loss_sums, task, data, eval_split, mesh, rules)
             if eval_split is not None else None)

  record = {"model_config": config_record(config), "vocabulary": vocab_record,
            "kind": data.kind}
  if init_from:
    # A LoRA run stores only its adapters (and head): loaders find the base here.
    record["init_from"] = os.path.abspath(init_from)
  state, metrics = train_loop(
      workdir=workdir,
      step_fn=make_train_step(loss_sums, opt, optimizer, num_micro_batches),
      init_state=lambda: init_train_state(trainable, opt, seed, trainable_shardings, mesh),
      make_batches=lambda position: make_batches(start_position=position), config=loop,
      mesh=mesh, rules=rules, shardings=shardings, frozen=frozen, eval_fn=eval_fn,
      record=record)

  summary = {"steps": int(jax.device_get(state.step)),
             "checkpoints": os.path.join(workdir, "checkpoints"),
             "final_metrics": {k: float(v) for k, v in metrics.items()},
             "model_config": config_record(config)}
  if export_hf:
    from align_jax.hf import save_checkpoint
    # Written beside the final folder, then swapped in: a rerun re-exports the same
    # final state instead of failing, and an interrupted export leaves no half folder.
    export_dir = os.path.join(workdir, "hf_export")
    staging = export_dir + ".partial"
    full = merge_params(state.params, frozen) if frozen else state.params
    save_checkpoint(staging, config, full, overwrite=True)
    if jax.process_index() == 0:
      if os.path.isdir(vocabulary):
        for name in os.listdir(vocabulary):
          if name.startswith("tokenizer") or name in ("special_tokens_map.json",):
            shutil.copy(os.path.join(vocabulary, name), staging)
      elif vocabulary.endswith(".model"):
        shutil.copy(vocabulary, os.path.join(staging, "tokenizer.model"))
      if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)  # an export of this same run's final state
      os.replace(staging, export_dir)
    summary["hf_export"] = export_dir
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "train_summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary
