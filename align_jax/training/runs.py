"""Runs in and out: the one loader of trained models, and the one Hugging Face export.

A *run* is whatever a user points a job at:

- an align_jax run directory (its WORKDIR or WORKDIR/checkpoints): the latest
  checkpoint, whose record names the model config, the vocabulary and the data kind;
- a LoRA run, which stored only what it trained (adapters, and a reward model's head):
  its base is loaded from the `init_from` in its record and the adapters are folded in;
- a PPO run: its final policy (WORKDIR/policy);
- a Hugging Face model directory (config.json + safetensors, tokenizer files).

`load_run` turns any of them into a `LoadedRun` (config, parameters placed on the mesh,
vocabulary, record); `LoadedRun.sampler` gives the shared `Sampler` over it.
`export_hf` writes a run's parameters with its tokenizer files as a Hugging Face
directory that transformers (and vLLM) load as is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import jax
import seqio
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.vocab import check_vocab_size, load_vocabulary
from align_jax.models import (RopeScaling, Transformer, TransformerConfig, TransformerWithHead,
                              abstract_params, init_params, is_lora_path, merge_lora,
                              merge_params, param_shardings, split_params)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.sampling import Sampler
from align_jax.training.checkpoints import Checkpointer, config_record, restore_params

# Data kinds whose runs train a scalar head (see `train_reward_model`).
REWARD_KINDS = ("preference", "process")
# Settings that say how a model runs on this host, not what it is: a caller's config
# supplies them for a run loaded from its record or from a Hugging Face directory.
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_block",
                  "attention_impl", "max_seq_len")


def absolute_path(path: str) -> str:
  """`path` made absolute, unless it has a scheme (gs://, ...), which is kept as it is."""
  return fs.resolve(path)


def is_hf_dir(path: str) -> bool:
  """Whether `path` is a Hugging Face model directory (it holds config.json)."""
  return fs.exists(fs.join(path, "config.json"))


def checkpoints_dir(path: str) -> str:
  """A previous run's WORKDIR or its checkpoints folder."""
  candidate = fs.join(path, "checkpoints")
  return candidate if fs.isdir(candidate) else path


def vocabulary_record(vocab) -> dict[str, Any]:
  """Facts that identify a vocabulary, stored with checkpoints and checked on load."""
  raw = getattr(vocab, "sp_model", None)
  fingerprint = (hashlib.sha256(raw).hexdigest() if isinstance(raw, bytes)
                 else getattr(vocab, "_fingerprint", None))
  return {"vocab_size": int(vocab.vocab_size), "eos_id": int(vocab.eos_id),
          "fingerprint": fingerprint}


def check_model_vocabulary(config: TransformerConfig, vocab: seqio.Vocabulary,
                           vocabulary: str | None, *, hf_dir: str | None = None,
                           allow_foreign_vocabulary: bool = False) -> None:
  """The check every trainer, `load_run` and the generate job start with: the model and its
  vocabulary agree, or nothing runs.

  hf_dir: the Hugging Face checkpoint the model's parameters come from. A vocabulary that
    is not its own tokenizer is refused (`align_jax.hf.check_checkpoint_vocabulary`)
    unless `allow_foreign_vocabulary`.
  Then `align_jax.data.check_vocab_size`: config.vocab_size is the vocabulary's size or a
  padding of it (fewer than 128 more ids); anything else is a VocabSizeError naming both
  sizes, the vocabulary file and the gin key to set. A Hugging Face model's own tokenizer
  may be padded as the model publishes it (hf_dir's, or a vocabulary folder whose
  config.json has this vocab_size: Qwen2's 151936 rows over 151665 tokens).
  """
  published = None
  if hf_dir is not None:
    if vocabulary is not None and fs.resolve(vocabulary) == fs.resolve(hf_dir):
      published = hf_dir  # the checkpoint's own tokenizer
    else:
      from align_jax.hf import check_checkpoint_vocabulary
      if check_checkpoint_vocabulary(hf_dir, vocab, allow_foreign=allow_foreign_vocabulary):
        published = hf_dir
  if published is None and vocabulary is not None and is_hf_dir(vocabulary):
    try:
      hf_config = json.loads(fs.read_text(fs.join(vocabulary, "config.json")))
    except ValueError:
      hf_config = {}
    if isinstance(hf_config, dict) and hf_config.get("vocab_size") == config.vocab_size:
      published = vocabulary
  check_vocab_size(config.vocab_size, vocab, vocabulary, published_by=published)


def config_from_record(record: Mapping[str, Any]) -> TransformerConfig:
  """The TransformerConfig a run recorded (`config_record` of it)."""
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  values = {k: v for k, v in record.items() if k in fields}
  for name in ("extra_eos_ids", "lora_targets"):
    if name in values:
      values[name] = tuple(values[name])
  if values.get("rope_scaling") is not None:
    values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
  return TransformerConfig(**values)


def is_reward_run(path: str) -> bool:
  """Whether `path` is an align_jax run that trained a reward model (a scalar head)."""
  return (not is_hf_dir(path) and fs.isdir(path)
          and read_run_record(_policy_dir(path)).get("kind") in REWARD_KINDS)


def model_for(path: str, runtime: TransformerConfig) -> TransformerConfig:
  """The config to build for the model at `path` under a caller's settings: a Hugging
  Face directory's shape comes from its checkpoint when loaded, so `runtime` as it is;
  an align_jax run's recorded config with `runtime`'s RUNTIME_FIELDS and LoRA settings
  (so one gin model file, e.g. runtime fields only, serves runs trained from it)."""
  if is_hf_dir(path):
    return runtime
  recorded = config_from_record(read_run_record(_policy_dir(path))["model_config"])
  return dataclasses.replace(recorded, lora_rank=runtime.lora_rank,
                             lora_targets=runtime.lora_targets,
                             **{k: getattr(runtime, k) for k in RUNTIME_FIELDS})


def placed_abstract_params(module, mesh: Mesh, rules: LogicalRules) -> Any:
  """Shapes and dtypes of `module`'s parameters, each with its sharding (a restore target)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_params(module), param_shardings(module, mesh, rules))


def read_run_record(run_dir: str) -> dict[str, Any]:
  """The record (model config, vocabulary, ...) stored with a run's latest checkpoint."""
  if not fs.isdir(run_dir):
    raise FileNotFoundError(f"{run_dir}: no such run directory")
  checkpointer = Checkpointer(checkpoints_dir(run_dir), async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"{run_dir}: no checkpoint found")
    return checkpointer.read_record(step)
  finally:
    checkpointer.close()


def _expected_record(config: TransformerConfig, vocab_record: dict | None) -> dict[str, Any]:
  expected = {"model_config": config_record(config)}
  if vocab_record is not None:
    expected["vocabulary"] = vocab_record
  return expected


def lora_trainable(head: bool):
  """Which parameters a LoRA run trains: the adapters, and a reward model's head."""
  return lambda path: is_lora_path(path) or (head and path[0] == "head")


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


def _restore_lora_run(run_dir: str, record: dict, module, mesh: Mesh, rules: LogicalRules,
                      vocab_record: dict | None) -> Any:
  init_from = record.get("init_from")
  if not init_from:
    raise ValueError(f"{run_dir} trained LoRA adapters, but its checkpoint does not record the "
                     "base model it started from (init_from); retrain it with this version "
                     "of align_jax or export it merged (export_hf=True)")
  if not fs.exists(init_from):
    raise FileNotFoundError(f"{run_dir} trained LoRA adapters over {init_from}, which no longer "
                            "exists; the base model is needed to restore it")
  stored = record["model_config"]
  lora = dataclasses.replace(module.config, lora_rank=stored["lora_rank"],
                             lora_alpha=stored["lora_alpha"],
                             lora_targets=tuple(stored["lora_targets"]))
  head = isinstance(module, TransformerWithHead)
  vocab_record = vocab_record if vocab_record is not None else record.get("vocabulary")
  _, base = load_initial_params(init_from, module.config, mesh, rules, seed=0,
                                vocab_record=None if is_hf_dir(init_from) else vocab_record)
  abstract = placed_abstract_params(TransformerWithHead(lora) if head else Transformer(lora),
                                    mesh, rules)
  trained, _ = restore_params(checkpoints_dir(run_dir),
                              split_params(abstract, lora_trainable(head))[0],
                              _expected_record(lora, vocab_record))
  full = merge_params(trained, {"backbone": base} if head else base)
  return merge_lora(lora, full)[1]


def load_initial_params(init_from: str | None, config: TransformerConfig, mesh: Mesh,
                        rules: LogicalRules, seed: int, vocab_record: dict | None = None
                        ) -> tuple[TransformerConfig, Any]:
  """Parameters a trainer starts from: random (init_from None), or a run's (see
  `load_run`); with `config.lora_rank > 0`, fresh adapters are added over them."""
  if init_from is None:
    return config, init_params(Transformer(config), jax.random.key(seed), mesh, rules)
  if is_hf_dir(init_from):
    from align_jax.hf import load_checkpoint
    keep = {k: getattr(config, k) for k in ("dtype", "param_dtype", "scan_layers",
                                              "remat_policy", "lora_rank", "lora_alpha",
                                              "lora_targets")}
    return load_checkpoint(init_from, mesh, rules, **keep)
  params = restore_run_params(_policy_dir(init_from),
                              Transformer(dataclasses.replace(config, lora_rank=0)),
                              mesh, rules, vocab_record)
  if config.lora_rank > 0:
    from align_jax.models import init_lora_params
    params = merge_params(params, init_lora_params(Transformer(config), jax.random.key(seed),
                                                   mesh, rules))
  return config, params


def fresh_head(module: TransformerWithHead, key: jax.Array, mesh: Mesh,
               rules: LogicalRules) -> Any:
  """Newly initialised parameters of a model's scalar head only (the backbone's
  initialisers are compiled away)."""
  import flax.linen as nn
  from align_jax.models.init import _boxed_init
  shardings = param_shardings(module, mesh, rules)["head"]
  return jax.jit(lambda k: nn.unbox(_boxed_init(module, k))["head"],
                 out_shardings=shardings)(key)


def _policy_dir(path: str) -> str:
  """A PPO run's final policy (WORKDIR/policy) when `path` is a PPO WORKDIR."""
  policy = fs.join(path, "policy")
  return policy if fs.isdir(fs.join(policy, "checkpoints")) else path


@dataclasses.dataclass
class LoadedRun:
  """A trained model ready to use: its config, its parameters placed on `mesh`, its
  vocabulary (None when neither the run nor the caller names one) and its record."""
  path: str
  config: TransformerConfig
  params: Any
  vocab: seqio.Vocabulary | None
  record: dict[str, Any]
  mesh: Mesh
  rules: LogicalRules
  head: bool = False

  @property
  def module(self) -> Transformer | TransformerWithHead:
    return TransformerWithHead(self.config) if self.head else Transformer(self.config)

  def sampler(self, batch_size: int = 16, length_buckets=None) -> Sampler:
    """The shared sampling engine over this run's language model."""
    if self.head:
      raise ValueError(f"{self.path} is a reward model (a scalar head); it scores, it does not "
                       "sample")
    return Sampler(self.module, self.params, vocab=self.vocab, mesh=self.mesh, rules=self.rules,
                   batch_size=batch_size, length_buckets=length_buckets)


def load_run(path: str, *, config: TransformerConfig | None = None,
             vocabulary: str | None = None, head: bool | None = None,
             mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
             allow_foreign_vocabulary: bool = False) -> LoadedRun:
  """Loads a run (see the module docstring) onto `mesh`.

  config: the expected model; for an align_jax run it must match the recorded one
    (what the parameters mean), for a Hugging Face directory only its runtime fields
    (dtype, param_dtype, scan_layers, ...) apply. None: the run's own config.
  vocabulary: a sentencepiece .model or tokenizer directory; checked against the
    run's recorded vocabulary, or against a Hugging Face directory's own tokenizer
    (another one is refused unless `allow_foreign_vocabulary`). None: the one the run
    recorded (or the Hugging Face directory's own tokenizer).
  head: load a scalar-head reward model (None: when the run trained one).
  The model's vocab_size must fit the vocabulary (`check_model_vocabulary`) before any
  parameter is read.
  """
  mesh = mesh or create_mesh()
  if not fs.exists(path):
    raise FileNotFoundError(f"{path}: no such run (expected an align_jax run directory or a "
                            "Hugging Face model directory)")
  if is_hf_dir(path):
    from align_jax.hf import load_checkpoint
    if head:
      raise ValueError(f"{path} is a Hugging Face language model; a reward model must be an "
                       "align_jax train_reward_model run")
    overrides = ({k: getattr(config, k) for k in RUNTIME_FIELDS if k != "max_seq_len"}
                 if config is not None else {})
    source = vocabulary or (path if _has_tokenizer(path) else None)
    vocab = _vocabulary(vocabulary, source)
    if vocab is not None:
      from align_jax.hf import load_config
      check_model_vocabulary(load_config(path), vocab, source, hf_dir=path,
                             allow_foreign_vocabulary=allow_foreign_vocabulary)
    loaded_config, params = load_checkpoint(path, mesh, rules, **overrides)
    return LoadedRun(path, loaded_config, params, vocab, {"hf_dir": path}, mesh, rules)

  path = _policy_dir(path)
  record = read_run_record(path)
  is_reward_model = record.get("kind") in REWARD_KINDS
  head = is_reward_model if head is None else head
  if head and not is_reward_model:
    raise ValueError(f"{path} trained a language model (kind {record.get('kind')!r}), not a "
                     "reward model")
  recorded = config_from_record(record["model_config"])
  if config is None:
    config = dataclasses.replace(recorded, lora_rank=0)
  else:
    config = dataclasses.replace(config, lora_rank=0)
  vocab = _vocabulary(vocabulary, record.get("vocabulary_file"))
  vocab_record = vocabulary_record(vocab) if vocab is not None else None
  if vocab is not None:
    check_model_vocabulary(config, vocab, vocabulary or record.get("vocabulary_file"))
  module = TransformerWithHead(config) if head else Transformer(config)
  params = restore_run_params(path, module, mesh, rules, vocab_record)
  return LoadedRun(path, config, params, vocab, record, mesh, rules, head=head)


def _has_tokenizer(directory: str) -> bool:
  return any(fs.exists(fs.join(directory, name))
             for name in ("tokenizer.json", "tokenizer.model"))


def _vocabulary(given: str | None, recorded: str | None) -> seqio.Vocabulary | None:
  source = given or recorded
  if source is None:
    return None
  if not given and not fs.exists(source):
    raise FileNotFoundError(f"the run's vocabulary {source} no longer exists; pass the "
                            "vocabulary explicitly")
  return load_vocabulary(source)


def finish_run(workdir: str, step: Any, metrics: Mapping[str, Any], config: TransformerConfig,
               params: Any, vocabulary: str | None, export: bool,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The end of every training run: its summary (steps, checkpoints, final metrics, model
  config, `extra`), the Hugging Face export when asked (WORKDIR/hf_export), and
  WORKDIR/train_summary.json. Returns the summary."""
  summary = {"steps": int(jax.device_get(step)),
             "checkpoints": fs.join(workdir, "checkpoints"),
             "final_metrics": {k: float(v) for k, v in metrics.items()},
             "model_config": config_record(config), **(extra or {})}
  if export:
    summary["hf_export"] = export_hf(fs.join(workdir, "hf_export"), config, params,
                                     vocabulary)
  if jax.process_index() == 0:
    fs.write_atomically(fs.join(workdir, "train_summary.json"), json.dumps(summary, indent=2))
  return summary


def export_hf(directory: str, config: TransformerConfig, params: Any, vocabulary: str | None
              ) -> str:
  """Writes `params` with the vocabulary's tokenizer files as a Hugging Face directory.

  Written to `directory.partial` and then swapped in, so an interrupted export leaves
  no half folder; an existing export at `directory` is replaced (an export is always
  derived from a run's checkpoints, which stay). Every host calls it; process 0 writes.
  """
  from align_jax.hf import save_checkpoint
  staging = directory + ".partial"
  if config.lora_rank > 0:
    config, params = merge_lora(config, params)
  save_checkpoint(staging, config, params, overwrite=True, vocabulary=vocabulary)
  if jax.process_index() == 0:
    if fs.isdir(directory):
      fs.rmtree(directory)
    fs.replace(staging, directory)
  return directory
