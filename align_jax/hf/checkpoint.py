"""Hugging Face checkpoints (config.json + safetensors) in and out of align_jax.

Loading places every tensor directly into its final sharding: each tensor is read
from the memory-mapped file, converted to align_jax's layout, and handed to the
devices that own its shards, one tensor at a time. Saving gathers one tensor at a
time and streams it to disk, so transformers and vLLM can serve the result.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.hf import safetensors_io
from align_jax.models.init import abstract_params, param_shardings
from align_jax.models.transformer import RopeScaling, Transformer, TransformerConfig
from align_jax.parallel import to_host
from align_jax.parallel.partitioning import DEFAULT_RULES, LogicalRules

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
}
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "gelu": "gelu"}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------------------------
# Configs


def config_from_hf(hf: dict[str, Any], source: str = "config.json", **overrides) -> TransformerConfig:
  """Maps a transformers config dict to a TransformerConfig (overrides win)."""
  def need(key):
    if key not in hf or hf[key] is None:
      raise ValueError(f"{source}: missing required key {key!r}")
    return hf[key]

  model_type = hf.get("model_type")
  if model_type not in _ARCHITECTURES:
    raise ValueError(f"{source}: unsupported model_type {model_type!r} "
                     f"(architectures {hf.get('architectures')}); supported: "
                     f"{', '.join(sorted(_ARCHITECTURES))}")
  if model_type == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
    raise ValueError(f"{source}: Llama checkpoints with attention_bias or mlp_bias are not supported")

  act_name = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
  if model_type == "gemma" and act_name == "gelu":
    act_name = "gelu_pytorch_tanh"  # transformers runs Gemma with the tanh approximation
  if act_name not in _ACTIVATIONS:
    raise ValueError(f"{source}: unsupported hidden_act {act_name!r}; expected one of "
                     f"{sorted(_ACTIVATIONS)}")

  rope = dict(hf.get("rope_parameters") or {})
  rope_theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
  if not rope and hf.get("rope_scaling"):
    rope = dict(hf["rope_scaling"])
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type == "default":
    rope_scaling = None
  elif rope_type == "llama3":
    rope_scaling = RopeScaling("llama3", float(rope["factor"]), float(rope["low_freq_factor"]),
                               float(rope["high_freq_factor"]),
                               int(rope["original_max_position_embeddings"]))
  elif rope_type == "linear":
    rope_scaling = RopeScaling("linear", float(rope["factor"]))
  else:
    raise ValueError(f"{source}: unsupported rope type {rope_type!r}; expected default, "
                     "llama3 or linear")

  num_heads = need("num_attention_heads")
  d_model = need("hidden_size")
  sliding_window = hf.get("sliding_window")
  if model_type == "qwen2" and not hf.get("use_sliding_window", False):
    sliding_window = None
  if model_type in ("llama", "gemma"):
    sliding_window = None

  def token_id(key):
    value = hf.get(key)
    return value[0] if isinstance(value, list) else value

  values = dict(
      vocab_size=need("vocab_size"), num_layers=need("num_hidden_layers"), d_model=d_model,
      num_heads=num_heads, num_kv_heads=hf.get("num_key_value_heads") or num_heads,
      head_dim=hf.get("head_dim") or d_model // num_heads, mlp_dim=need("intermediate_size"),
      activation=_ACTIVATIONS[act_name], norm_eps=hf.get("rms_norm_eps", 1e-6),
      norm_offset=1.0 if model_type == "gemma" else 0.0, rope_theta=float(rope_theta),
      rope_scaling=rope_scaling, qkv_bias=model_type == "qwen2",
      tie_embeddings=bool(hf.get("tie_word_embeddings", model_type == "gemma")),
      embed_scale=model_type == "gemma", sliding_window=sliding_window,
      max_seq_len=hf.get("max_position_embeddings", 2048), family=model_type,
      bos_id=token_id("bos_token_id"), eos_id=token_id("eos_token_id"),
      pad_id=token_id("pad_token_id"),
      extra_eos_ids=tuple(hf["eos_token_id"][1:]) if isinstance(hf.get("eos_token_id"), list)
      else ())
  values.update(overrides)
  return TransformerConfig(**values)


def config_to_hf(config: TransformerConfig, dtype: str = "float32") -> dict[str, Any]:
  """A transformers config dict for `config`."""
  family = config.family
  hf: dict[str, Any] = {
      "architectures": [_ARCHITECTURES[family]], "model_type": family,
      "vocab_size": config.vocab_size, "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "rms_norm_eps": config.norm_eps,
      "rope_theta": config.rope_theta, "max_position_embeddings": config.max_seq_len,
      "tie_word_embeddings": config.tie_embeddings, "torch_dtype": dtype,
      "bos_token_id": config.bos_id,
      "eos_token_id": ([config.eos_id, *config.extra_eos_ids] if config.extra_eos_ids
                       else config.eos_id),
      "pad_token_id": config.pad_id, "attention_dropout": 0.0, "use_cache": True,
  }
  act = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}[config.activation]
  hf["hidden_act"] = act
  if family == "gemma":
    hf["hidden_activation"] = act
    if config.norm_offset != 1.0 or not config.embed_scale:
      raise ValueError("a gemma export needs norm_offset=1.0 and embed_scale=True")
  elif config.norm_offset or config.embed_scale:
    raise ValueError(f"family {family!r} has no norm offset or embedding scale; set family='gemma'")
  if family == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  if config.qkv_bias != (family == "qwen2"):
    raise ValueError(f"qkv_bias={config.qkv_bias} cannot be expressed as a {family!r} checkpoint")
  if family == "qwen2":
    hf["use_sliding_window"] = config.sliding_window is not None
  if family in ("mistral", "qwen2"):
    hf["sliding_window"] = config.sliding_window
  elif config.sliding_window is not None:
    raise ValueError(f"family {family!r} has no sliding window")
  if config.rope_scaling is not None:
    s = config.rope_scaling
    hf["rope_scaling"] = ({"rope_type": "linear", "factor": s.factor} if s.rope_type == "linear"
                          else {"rope_type": "llama3", "factor": s.factor,
                                "low_freq_factor": s.low_freq_factor,
                                "high_freq_factor": s.high_freq_factor,
                                "original_max_position_embeddings":
                                    s.original_max_position_embeddings})
  return hf


# ---------------------------------------------------------------------------------
# Tensor layout


@dataclasses.dataclass(frozen=True)
class _Tensor:
  hf_name: str
  path: tuple[str, ...]          # path in the (unstacked) align_jax parameter tree
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _linear(hf_name, path, d_in, d_out):
  return _Tensor(hf_name, path, (d_out, d_in), lambda a: a.T, lambda a: a.T)


def _tensors(config: TransformerConfig) -> Iterator[_Tensor]:
  """Every tensor of the checkpoint, in transformers' naming and order."""
  d, h, n, k, f = config.d_model, config.head_dim, config.num_heads, config.num_kv_heads, config.mlp_dim
  ident = lambda a: a
  yield _Tensor("model.embed_tokens.weight", ("embedder", "embedding"), (config.vocab_size, d),
                ident, ident)
  for i in range(config.num_layers):
    pre, ours = f"model.layers.{i}.", f"layers_{i}"
    for proj, heads in (("q", n), ("k", k), ("v", k)):
      yield _Tensor(f"{pre}self_attn.{proj}_proj.weight", (ours, "attention", f"{proj}_kernel"),
                    (heads * h, d), lambda a, heads=heads: a.T.reshape(d, heads, h),
                    lambda a, heads=heads: a.reshape(d, heads * h).T)
      if config.qkv_bias:
        yield _Tensor(f"{pre}self_attn.{proj}_proj.bias", (ours, "attention", f"{proj}_bias"),
                      (heads * h,), lambda a, heads=heads: a.reshape(heads, h),
                      lambda a, heads=heads: a.reshape(heads * h))
    yield _Tensor(f"{pre}self_attn.o_proj.weight", (ours, "attention", "o_kernel"), (d, n * h),
                  lambda a: a.T.reshape(n, h, d), lambda a: a.reshape(n * h, d).T)
    yield _linear(f"{pre}mlp.gate_proj.weight", (ours, "mlp", "gate_kernel"), d, f)
    yield _linear(f"{pre}mlp.up_proj.weight", (ours, "mlp", "up_kernel"), d, f)
    yield _linear(f"{pre}mlp.down_proj.weight", (ours, "mlp", "down_kernel"), f, d)
    yield _Tensor(f"{pre}input_layernorm.weight", (ours, "pre_attention_norm", "scale"), (d,),
                  ident, ident)
    yield _Tensor(f"{pre}post_attention_layernorm.weight", (ours, "pre_mlp_norm", "scale"), (d,),
                  ident, ident)
  yield _Tensor("model.norm.weight", ("final_norm", "scale"), (d,), ident, ident)
  if not config.tie_embeddings:
    yield _linear("lm_head.weight", ("lm_head",), d, config.vocab_size)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _grouped(config: TransformerConfig) -> Iterator[tuple[tuple[str, ...], list[_Tensor]]]:
  """(parameter path, tensors feeding it): one tensor each, or one per layer if scanned."""
  if not config.scan_layers:
    for t in _tensors(config):
      yield t.path, [t]
    return
  stacked: dict[tuple[str, ...], list[_Tensor]] = {}
  for t in _tensors(config):
    if t.path[0].startswith("layers_"):
      stacked.setdefault(("layers",) + t.path[1:], []).append(t)
    else:
      yield t.path, [t]
  yield from stacked.items()


# ---------------------------------------------------------------------------------
# Load / save


def load_config(path: str, **overrides) -> TransformerConfig:
  """The TransformerConfig of a Hugging Face model directory's config.json (overrides win)."""
  config_path = fs.join(path, "config.json")
  if not fs.exists(config_path):
    raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face model directory")
  with fs.open(config_path) as f:
    try:
      hf = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path}: invalid JSON ({e})") from None
  return config_from_hf(hf, config_path, **overrides)


def load_checkpoint(path: str, mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                    *, vocabulary=None, allow_foreign_vocabulary: bool = False,
                    **config_overrides) -> tuple[TransformerConfig, Any]:
  """Reads a Hugging Face checkpoint directory into (config, params).

  `config_overrides` replace TransformerConfig fields that are not stored in the
  checkpoint's architecture (dtype, param_dtype, scan_layers, remat_policy, ...).
  With a mesh, every tensor is placed directly onto its sharding under `rules`.
  vocabulary: the seqio vocabulary the model will be used with; one that is not the
  checkpoint's own tokenizer is refused (`align_jax.hf.tokenizer.ForeignVocabularyError`)
  unless `allow_foreign_vocabulary`.
  """
  if vocabulary is not None:
    from align_jax.hf.tokenizer import check_checkpoint_vocabulary
    check_checkpoint_vocabulary(path, vocabulary, allow_foreign=allow_foreign_vocabulary)
  config = load_config(path, **config_overrides)
  reader = safetensors_io.CheckpointReader(path)
  model = Transformer(config)
  abstract = abstract_params(model)
  shardings = param_shardings(model, mesh, rules) if mesh is not None else None
  param_dtype = np.dtype(jax.numpy.dtype(config.param_dtype))

  expected = {t.hf_name for t in _tensors(config)}
  unexpected = [name for name in reader.keys() if name not in expected
                and not name.endswith(_IGNORED_SUFFIXES)
                and not (config.tie_embeddings and name == "lm_head.weight")]
  if unexpected:
    raise ValueError(f"{path}: checkpoint has tensors the {config.family!r} config does not "
                     f"use, e.g. {unexpected[:5]}; is config.json the right one?")

  params: dict = {}
  for param_path, tensors in _grouped(config):
    host = []
    for t in tensors:
      if t.hf_name not in reader.keys():
        raise ValueError(f"{path}: checkpoint lacks tensor {t.hf_name!r} required by config.json")
      shape = reader.shape(t.hf_name)
      if shape != t.hf_shape:
        raise ValueError(f"{reader.file_of(t.hf_name)}: tensor {t.hf_name!r} has shape {shape}, "
                         f"but config.json implies {t.hf_shape}")
      host.append(t.to_ours(reader.get(t.hf_name)).astype(param_dtype))
    array = np.stack(host) if param_path[0] == "layers" else host[0]
    want = _get(abstract, param_path)
    assert array.shape == want.shape, (param_path, array.shape, want.shape)
    if shardings is None:
      _set(params, param_path, jax.device_put(array))
    else:
      sharding = _get(shardings, param_path)
      _set(params, param_path,
           jax.make_array_from_callback(array.shape, sharding, lambda index, a=array: a[index]))
    del host, array
  if config.lora_rank > 0:  # adapters are not in a Hugging Face checkpoint: start them fresh
    from align_jax.models.lora import init_lora_params, merge_params
    params = merge_params(params, init_lora_params(model, jax.random.key(0), mesh, rules))
  return config, params


def save_checkpoint(path: str, config: TransformerConfig, params: Any, *,
                    dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
                    overwrite: bool = False, vocabulary=None) -> list[str]:
  """Writes params as a Hugging Face checkpoint directory (config.json + safetensors).

  vocabulary: the model's vocabulary (a SentencePiece `.model` file, a tokenizer folder,
  or a vocabulary loaded from one); its tokenizer is written next to the weights
  (`align_jax.hf.tokenizer.save_tokenizer`), so transformers' AutoTokenizer loads the
  folder. Without it the folder holds no tokenizer.

  `params` of a `Transformer` become a causal LM (`LlamaForCausalLM`, ...); those of a
  single-output `TransformerWithHead` ({"backbone", "head"}) a sequence classifier with
  one label (`LlamaForSequenceClassification`, ...) whose `score` is the head's kernel
  (transformers' score layer has no bias: the head's bias goes to `score_bias.json`,
  so a transformers score plus that bias is align_jax's score). Low-rank adapters are merged into their
  kernels first. Refuses to write into a directory that already holds a checkpoint
  unless `overwrite`. In a multi-host run every host must call it; process 0 writes.
  Returns the written file names.
  """
  from align_jax.models.lora import merge_lora
  head = params.get("head") if isinstance(params, dict) and "backbone" in params else None
  if head is not None:
    params = params["backbone"]
  config, params = merge_lora(config, params)  # transformers sees plain (merged) weights
  dtype = dtype or config.param_dtype
  np_dtype = safetensors_io.dtype_of(dtype)
  if jax.process_index() == 0:
    existing = [n for n in ("config.json", safetensors_io.SINGLE_FILE, safetensors_io.INDEX_FILE)
                if fs.exists(fs.join(path, n))]
    if existing and not overwrite:
      raise FileExistsError(f"{path} already holds a checkpoint ({', '.join(existing)}); "
                            "choose a new directory or pass overwrite=True")
    fs.makedirs(path)
    if overwrite:  # no shard or index of the old checkpoint may survive next to the new one
      for name in fs.listdir(path):
        if (name.endswith((".safetensors", ".partial"))
            or name in (safetensors_io.INDEX_FILE, "score_bias.json")):
          fs.remove(fs.join(path, name))

  entries, sources = [], {}
  for param_path, tensors in _grouped(config):
    for layer, t in enumerate(tensors):
      if head is not None and t.hf_name == "lm_head.weight":
        continue  # a sequence classifier has a score layer instead
      entries.append((t.hf_name, t.hf_shape, np_dtype))
      sources[t.hf_name] = (param_path, layer if param_path[0] == "layers" else None, t)
  if head is not None:
    if np.shape(head["kernel"])[-1] != 1:
      raise ValueError("only single-output heads export as a sequence classifier")
    params = {**params, "score_head": head}
    score = _linear("score.weight", ("score_head", "kernel"), config.d_model, 1)
    entries.append((score.hf_name, score.hf_shape, np_dtype))
    sources[score.hf_name] = (score.path, None, score)

  cache: dict[tuple[str, ...], np.ndarray] = {}

  def fetch(name):
    param_path, layer, t = sources[name]
    if param_path not in cache:
      cache.clear()  # keep at most one (stacked) parameter on the host
      cache[param_path] = to_host(_get(params, param_path))
    value = cache[param_path]
    return t.to_hf(value if layer is None else value[layer])

  if jax.process_index() != 0:
    for name, _, _ in entries:  # take part in the gathers without writing
      fetch(name)
    return []
  files = safetensors_io.write_checkpoint(path, entries, fetch, max_shard_bytes)
  hf_config = config_to_hf(config, dtype)
  if head is not None:
    hf_config["architectures"] = [_ARCHITECTURES[config.family].replace(
        "ForCausalLM", "ForSequenceClassification")]
    hf_config["num_labels"] = 1
    hf_config["id2label"], hf_config["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
    with fs.open(fs.join(path, "score_bias.json"), "w") as f:
      json.dump({"bias": float(to_host(head["bias"]).reshape(-1)[0])}, f)
    files.append("score_bias.json")
  if vocabulary is not None:
    from align_jax.hf.tokenizer import save_tokenizer
    files += save_tokenizer(path, vocabulary)
  with fs.open(fs.join(path, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  return files + ["config.json"]
