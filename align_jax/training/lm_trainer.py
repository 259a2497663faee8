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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from align_jax.data import tasks as task_lib
from align_jax.data.pipeline import (DEFAULT_TRUNCATE, BatchIterator, check_seq_len, data_summary,
                                     describe_stats)
from align_jax.data.vocab import load_vocabulary
from align_jax.models import (Transformer, TransformerConfig, TransformerWithHead, init_params,
                              merge_params, param_shardings, split_params)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.training.checkpoints import config_record
from align_jax.training.dpo import REFERENCE_KEY, dpo_loss_sums
from align_jax.training.loop import (LoopConfig, batch_shardings, global_batch, init_train_state,
                                     state_shardings, train_loop)
from align_jax.training.losses import lm_loss_sums
from align_jax.training.optimizer import OptimizerConfig, make_optimizer
from align_jax.training.reward import pairwise_loss_sums, process_loss_sums
from align_jax.training.runs import REWARD_KINDS, lora_trainable
from align_jax.training.runs import (absolute_path, check_model_vocabulary, finish_run,
                                     fresh_head, is_hf_dir, is_reward_run, load_initial_params,
                                     restore_run_params, vocabulary_record)
from align_jax.training.sft import make_train_step


# The loss each data kind trains with (see `align_jax.training.losses` and `.reward`).
LOSSES = {"lm": lm_loss_sums, "sft": lm_loss_sums, "preference": pairwise_loss_sums,
          "process": process_loss_sums}


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
  truncate: what happens to a sequence longer than a row: 'split' (documents, kind 'lm',
    into consecutive chunks), 'keep_response' (trim the prompt from the left, then the
    response's tail), 'right', 'left' or 'drop'; None: the kind's default
    (`align_jax.data.pipeline.DEFAULT_TRUNCATE`). Rows left with no trained token are
    dropped and counted; a summary line is printed before training.
  data_shards: the data's number of shards, a multiple of the number of hosts, each
    host reading its share (`BatchIterator`): the batches, and so the run, are then the
    same on any number of hosts dividing it. None: one shard per host (the batches
    depend on the host count).
  pad_to_multiple_of: cut each training batch after its longest row, to the smallest
    multiple of this that holds it (at most seq_len; `BatchIterator`), rather than
    padding every row to seq_len: unpacked rows of varied lengths (reward-model, DPO
    and process data) then cost what they hold. The step compiles once per length
    (at most seq_len / pad_to_multiple_of lengths), when a length first comes (size
    memory for seq_len); take a multiple of the model's `attention_block`, or attention
    over the cut length runs unblocked. Eval batches stay seq_len long. None: every
    batch is seq_len long.
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
  truncate: str | None = None
  seed: int = 0
  eval_batches: int = 8
  data_shards: int | None = None
  pad_to_multiple_of: int | None = None

  def __post_init__(self):
    if self.kind not in LOSSES:
      raise ValueError(f"DataConfig.kind must be one of {sorted(LOSSES)}, got {self.kind!r}")
    if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
      raise ValueError("DataConfig.pad_to_multiple_of must be None or >= 1, got "
                       f"{self.pad_to_multiple_of}")
    if bool(self.train_files) == bool(self.task):  # checked before normalising the tuples
      raise ValueError("DataConfig needs exactly one of train_files (jsonl) or task (a "
                       "registered seqio task name)")
    for name in ("train_files", "eval_files"):  # one path, or several
      value = getattr(self, name)
      object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))


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
                            truncate=data.truncate, num_epochs=1, shuffle=False,
                            data_shards=data.data_shards)
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
             export_hf: bool = False, allow_foreign_vocabulary: bool = False) -> dict[str, Any]:
  """Trains a language model in WORKDIR (resuming if it holds checkpoints).

  vocabulary: a sentencepiece .model file or a Hugging Face model directory. Before
    anything trains, the model's vocab_size must be its size or a padding of it, and a
    Hugging Face `init_from` must have it as its own tokenizer unless
    `allow_foreign_vocabulary` (`align_jax.training.runs.check_model_vocabulary`).
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
                export_hf=export_hf, head=False,
                allow_foreign_vocabulary=allow_foreign_vocabulary)


def train_reward_model(workdir: str, model: TransformerConfig, data: DataConfig,
                       vocabulary: str, optimizer: OptimizerConfig = OptimizerConfig(),
                       loop: LoopConfig = LoopConfig(), *, init_from: str | None = None,
                       mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                       num_micro_batches: int = 1, seed: int = 0, export_hf: bool = False,
                       allow_foreign_vocabulary: bool = False) -> dict[str, Any]:
  """Trains a reward model in WORKDIR: a scalar head on a language model's backbone.

  data.kind 'preference': pairwise Bradley-Terry loss on the score at each answer's
  last token (eval: pair accuracy and margin); 'process': binary cross-entropy at the
  labelled tokens (step ends, or the EOS for an outcome model).
  init_from: the backbone (an align_jax LM run or a Hugging Face directory; None:
  random); the head starts fresh. A reward-model run continues, head and all (e.g.
  after preference-model pre-training on public data). With LoRA the adapters and the head train.
  export_hf also writes WORKDIR/hf_export, a one-label sequence classifier for
  transformers (see `align_jax.hf.save_checkpoint`) with the tokenizer files.
  The vocabulary is checked as `train_lm` checks it.
  """
  if data.kind not in REWARD_KINDS:
    raise ValueError(f"train_reward_model trains on DataConfig.kind {REWARD_KINDS}, got "
                     f"{data.kind!r}")
  return _train(workdir, model, data, vocabulary, optimizer, loop, init_from=init_from,
                mesh=mesh, rules=rules, num_micro_batches=num_micro_batches, seed=seed,
                export_hf=export_hf, head=True,
                allow_foreign_vocabulary=allow_foreign_vocabulary)


def train_dpo(workdir: str, model: TransformerConfig, data: DataConfig, vocabulary: str,
              optimizer: OptimizerConfig = OptimizerConfig(), loop: LoopConfig = LoopConfig(),
              *, init_from: str, beta: float = 0.1, mesh: Mesh | None = None,
              rules: LogicalRules = DEFAULT_RULES, num_micro_batches: int = 1, seed: int = 0,
              export_hf: bool = False, allow_foreign_vocabulary: bool = False
              ) -> dict[str, Any]:
  """Trains a language model in WORKDIR by direct preference optimisation
  (`align_jax.training.dpo`) on kind 'preference' data.

  init_from: the language model the policy starts from, which is also the frozen
  reference (an align_jax run or a Hugging Face directory). The run's record keeps
  `dpo_beta` and the reference, so its implicit reward can be read back
  (`align_jax.rewards.ImplicitProcessRewardModel`). Eval: pair accuracy, margin and
  both sides' implicit rewards. Full fine-tuning only (lora_rank must be 0).
  """
  if data.kind != "preference":
    raise ValueError(f"train_dpo trains on DataConfig.kind 'preference', got {data.kind!r}")
  if not init_from:
    raise ValueError("train_dpo needs init_from: the model it starts from and is held to")
  if model.lora_rank > 0:
    raise ValueError("train_dpo fine-tunes every weight; set lora_rank=0")
  if not beta > 0:
    raise ValueError(f"train_dpo needs beta > 0, got {beta}")
  return _train(workdir, model, data, vocabulary, optimizer, loop, init_from=init_from,
                mesh=mesh, rules=rules, num_micro_batches=num_micro_batches, seed=seed,
                export_hf=export_hf, head=False,
                allow_foreign_vocabulary=allow_foreign_vocabulary, dpo_beta=float(beta))


def _batch_tokens(batch) -> int:
  """Real tokens in a batch; a preference batch holds both answers of each pair."""
  keys = [k for k in ("segment_ids", "chosen_segment_ids", "rejected_segment_ids") if k in batch]
  return int(sum((np.asarray(batch[k]) > 0).sum() for k in keys))


def _train(workdir: str, model: TransformerConfig, data: DataConfig, vocabulary: str,
           optimizer: OptimizerConfig, loop: LoopConfig, *, init_from: str | None,
           mesh: Mesh | None, rules: LogicalRules, num_micro_batches: int, seed: int,
           export_hf: bool, head: bool, allow_foreign_vocabulary: bool,
           dpo_beta: float | None = None) -> dict[str, Any]:
  if init_from and is_hf_dir(init_from):  # The model's length is the checkpoint's.
    from align_jax.hf import load_config
    check_seq_len(data.seq_len, load_config(init_from).max_seq_len,
                  max_name=f"max_position_embeddings in {init_from}/config.json")
  else:
    check_seq_len(data.seq_len, model.max_seq_len)
  mesh = mesh or create_mesh()
  vocab = load_vocabulary(vocabulary)
  vocab_record = vocabulary_record(vocab)
  if init_from and is_hf_dir(init_from):  # The model is the checkpoint's.
    from align_jax.hf import load_config
    check_model_vocabulary(load_config(init_from), vocab, vocabulary, hf_dir=init_from,
                           allow_foreign_vocabulary=allow_foreign_vocabulary)
  else:
    check_model_vocabulary(model, vocab, vocabulary)
  task_name = "align_jax_" + hashlib.sha1(absolute_path(workdir).encode()).hexdigest()[:12]
  task, eval_split, train_split = _register_tasks(task_name, data, vocab)
  if data.train_files:  # Held in memory: one pass counts what splitting and truncation do.
    stats = data_summary(task, kind=data.kind, seq_len=data.seq_len, split=train_split,
                         pack=data.pack, truncate=data.truncate)
    policy = data.truncate or DEFAULT_TRUNCATE[data.kind]
    print(f"[align_jax] data: {describe_stats(stats)} (seq_len {data.seq_len}, truncate "
          f"{policy!r})", flush=True)
  else:  # A registered task may be large and lazy: the counts are logged as they come.
    print(f"[align_jax] data: task {data.task!r}; splits, truncations and drops are logged as "
          "the data/* metrics", flush=True)

  init_vocab = vocab_record if init_from and not is_hf_dir(init_from) else None
  if head and init_from is None:
    config = model
    model_module = TransformerWithHead(config)
    params = init_params(model_module, jax.random.key(seed), mesh, rules)
  elif head and is_reward_run(init_from):  # e.g. after preference-model pre-training
    if model.lora_rank > 0:
      raise ValueError(f"init_from={init_from} is a reward model: continuing one trains every "
                       "weight; set lora_rank=0")
    config = model
    model_module = TransformerWithHead(config)
    params = restore_run_params(init_from, model_module, mesh, rules, init_vocab)
  else:
    config, params = load_initial_params(init_from, model, mesh, rules, seed, init_vocab)
    model_module = TransformerWithHead(config) if head else Transformer(config)
    if head:
      params = {"backbone": params,
                "head": fresh_head(model_module, jax.random.key(seed + 1), mesh, rules)}
  all_shardings = param_shardings(model_module, mesh, rules)
  if dpo_beta is not None:  # the reference: a copy (the state's buffers are donated)
    trainable, trainable_shardings = params, all_shardings
    frozen = {REFERENCE_KEY: jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                                     out_shardings=all_shardings)(params)}
  elif config.lora_rank > 0:
    trainable, frozen = split_params(params, lora_trainable(head))
    trainable_shardings = split_params(all_shardings, lora_trainable(head))[0]
  else:
    trainable, frozen, trainable_shardings = params, None, all_shardings
  del params

  opt = make_optimizer(optimizer)
  shardings = state_shardings(opt, trainable, trainable_shardings, mesh)
  make_batches = functools.partial(
      BatchIterator, task, kind=data.kind, batch_size=data.batch_size, seq_len=data.seq_len,
      split=train_split, seed=data.seed, pack=data.pack, truncate=data.truncate,
      data_shards=data.data_shards, pad_to_multiple_of=data.pad_to_multiple_of)
  loss_sums = (functools.partial(dpo_loss_sums, model_module, beta=dpo_beta)
               if dpo_beta is not None else functools.partial(LOSSES[data.kind], model_module))
  eval_fn = (_eval_fn(loss_sums, task, data, eval_split, mesh, rules)
             if eval_split is not None else None)

  record = {"model_config": config_record(config), "vocabulary": vocab_record,
            "vocabulary_file": absolute_path(vocabulary), "kind": data.kind,
            "chat_template": data.chat_template if data.kind != "lm" else None}
  if init_from:
    # A LoRA run stores only its adapters (and head): loaders find the base here.
    record["init_from"] = absolute_path(init_from)
  if dpo_beta is not None:  # a language model, not a reward model; its reward needs these
    record.update(kind="dpo", dpo_beta=dpo_beta, reference=absolute_path(init_from))
  state, metrics = train_loop(
      workdir=workdir,
      step_fn=make_train_step(loss_sums, opt, optimizer, num_micro_batches),
      init_state=lambda: init_train_state(trainable, opt, seed, trainable_shardings, mesh),
      make_batches=lambda position: make_batches(start_position=position), config=loop,
      mesh=mesh, rules=rules, shardings=shardings, frozen=frozen, eval_fn=eval_fn,
      record=record, batch_tokens=_batch_tokens)

  full = merge_params(state.params, frozen) if frozen and dpo_beta is None else state.params
  return finish_run(workdir, state.step, metrics, config, full, vocabulary, export_hf)
