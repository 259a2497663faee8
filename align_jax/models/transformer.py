"""A decoder-only transformer covering the Llama 2/3, Mistral, Qwen2 and Gemma families.

Pure-functional Flax Linen: parameters are a plain pytree, the KV cache is an explicit
pytree passed in and returned. Every parameter and activation carries logical axis
names (see `align_jax.parallel`), so the same module runs on one CPU and on a pod.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from align_jax.parallel.partitioning import with_logical_constraint

Array = jax.Array
Cache = dict[str, Any]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: str | Any) -> Any:
  """The jnp dtype a name ('float32', 'bfloat16', 'float16') stands for; a dtype as is."""
  if isinstance(name, str):
    if name not in _DTYPES:
      raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]
  return name


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Rotary-embedding frequency scaling: `llama3` (Llama 3.1+) or `linear`."""
  rope_type: Literal["llama3", "linear"] = "llama3"
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


def is_lora_path(path: Sequence[str]) -> bool:
  """Whether a parameter path names a low-rank adapter leaf."""
  return "_lora_" in str(path[-1])


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shapes and family switches of a decoder-only language model."""
  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  activation: Literal["silu", "gelu_tanh", "gelu"] = "silu"
  norm_eps: float = 1e-6
  norm_offset: float = 0.0          # Gemma scales by (1 + weight)
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  qkv_bias: bool = False            # Qwen2
  tie_embeddings: bool = False
  embed_scale: bool = False         # Gemma multiplies embeddings by sqrt(d_model)
  sliding_window: int | None = None  # Mistral
  max_seq_len: int = 2048
  family: Literal["llama", "mistral", "qwen2", "gemma"] = "llama"
  bos_id: int | None = None
  eos_id: int | None = None
  pad_id: int | None = None
  extra_eos_ids: tuple[int, ...] = ()  # further end-of-turn ids (e.g. Llama 3's <|eot_id|>)
  dtype: str = "float32"            # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: Literal["none", "full", "dots", "dots_no_batch"] = "none"
  # Without a KV cache, queries are attended in blocks of this many positions, each
  # against the keys up to its own end only (the rest are masked by causality anyway):
  # fewer FLOPs and cache-sized softmax arrays (0: one block).
  attention_block: int = 128
  # Attention without a KV cache (training, scoring, prefill): "native" is the blocked
  # einsum above; "xla" / "cudnn" call jax.nn.dot_product_attention with that
  # implementation ("cudnn": fused flash attention on NVIDIA GPUs, bf16/fp16 only).
  attention_impl: Literal["native", "xla", "cudnn"] = "native"
  initializer_range: float = 0.02
  lora_rank: int = 0                # > 0 adds low-rank adapters to `lora_targets`
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("q", "k", "v", "o")

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    unknown = set(self.lora_targets) - set(LORA_TARGETS)
    if unknown:
      raise ValueError(f"unknown lora_targets {sorted(unknown)}; expected a subset of {LORA_TARGETS}")
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
    object.__setattr__(self, "extra_eos_ids", tuple(int(i) for i in self.extra_eos_ids))
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
    as_dtype(self.dtype), as_dtype(self.param_dtype)
    if self.attention_impl not in ("native", "xla", "cudnn"):
      raise ValueError(f"unknown attention_impl {self.attention_impl!r}; expected native, xla "
                       "or cudnn")

  def replace(self, **changes) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)

  @property
  def num_params(self) -> int:
    """Number of parameters, without LoRA adapters or a scalar head."""
    d, h, k, f, v = self.d_model, self.head_dim, self.num_kv_heads, self.mlp_dim, self.vocab_size
    attn = d * self.num_heads * h * 2 + d * k * h * 2
    if self.qkv_bias:
      attn += (self.num_heads + 2 * k) * h
    layer = attn + 3 * d * f + 2 * d
    return self.num_layers * layer + v * d * (1 if self.tie_embeddings else 2) + d


# ---------------------------------------------------------------------------------
# Helpers


def rope_inverse_frequencies(config: TransformerConfig) -> np.ndarray:
  """Per-pair rotation frequencies, with Llama-3 or linear scaling applied."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64)
                                          .astype(np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  scaling = config.rope_scaling
  if scaling is None:
    return inv_freq
  if scaling.rope_type == "linear":
    return (inv_freq / scaling.factor).astype(np.float32)
  if scaling.rope_type != "llama3":
    raise ValueError(f"unknown rope_type {scaling.rope_type!r}; expected 'llama3' or 'linear'")
  old_context = scaling.original_max_position_embeddings
  low_freq_wavelen = old_context / scaling.low_freq_factor
  high_freq_wavelen = old_context / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = (old_context / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions: Array, config: TransformerConfig) -> tuple[Array, Array]:
  """cos/sin tables [batch, length, head_dim] in float32 (halves layout)."""
  inv_freq = jnp.asarray(rope_inverse_frequencies(config))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Array, cos: Array, sin: Array, heads_first: bool = False) -> Array:
  """Rotates x [batch, length, heads, head_dim] (or [batch, heads, length, head_dim] with
  heads_first) by the tables."""
  # Per half, without materialising the rotated copy of x: fewer passes over memory.
  half = x.shape[-1] // 2
  cos, sin = cos[..., :half].astype(x.dtype), sin[..., :half].astype(x.dtype)
  # [batch, length, half] -> broadcast over the heads axis.
  cos, sin = (cos[:, None], sin[:, None]) if heads_first else (cos[:, :, None], sin[:, :, None])
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention_mask(query_slots: Array, key_slots: Array, query_segments: Array,
                   key_segments: Array, query_positions: Array, key_positions: Array,
                   sliding_window: int | None) -> Array:
  """Boolean [batch, 1, 1, q, k]: causal in cache slots, same segment, in window."""
  allowed = key_slots[None, None, :] <= query_slots[None, :, None]
  allowed = allowed & (query_segments[:, :, None] == key_segments[:, None, :])
  if sliding_window is not None:
    distance = query_positions[:, :, None] - key_positions[:, None, :]
    allowed = allowed & (distance < sliding_window)
  return allowed[:, None, None, :, :]


def attention_bias(allowed: Array) -> Array:
  """0 where attention is allowed, a large negative number elsewhere (float32).

  Adding a bias costs less than selecting with a boolean mask, forward and backward.
  Rows with nothing allowed (padding queries) end up uniform instead of NaN.
  """
  return jnp.where(allowed, 0.0, -1e30).astype(jnp.float32)


def _activation(name: str):
  if name == "silu":
    return jax.nn.silu
  if name == "gelu_tanh":
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  raise ValueError(f"unknown activation {name!r}; expected silu, gelu_tanh or gelu")


def _init(config: TransformerConfig, names: tuple[str, ...], stddev: float | None = None):
  return nn.with_logical_partitioning(
      nn.initializers.normal(stddev or config.initializer_range), names)


def _lora_delta(module: nn.Module, name: str, x: Array, x_spec: str,
                in_shape: tuple[int, ...], in_names: tuple[str, ...],
                out_shape: tuple[int, ...], out_names: tuple[str, ...]) -> Array | None:
  """Low-rank update (x A) B * alpha / r of projection `name`, or None without LoRA.

  A starts random and B at zero, so an adapted model starts equal to its base.
  """
  cfg: TransformerConfig = module.config
  if cfg.lora_rank <= 0 or name not in cfg.lora_targets:
    return None
  rank, pdtype = cfg.lora_rank, as_dtype(cfg.param_dtype)
  a = module.param(f"{name}_lora_a", nn.with_logical_partitioning(
      nn.initializers.normal(1.0 / math.sqrt(math.prod(in_shape))), in_names + ("lora_rank",)),
      in_shape + (rank,), pdtype)
  b = module.param(f"{name}_lora_b", nn.with_logical_partitioning(
      nn.initializers.zeros, ("lora_rank",) + out_names), (rank,) + out_shape, pdtype)
  in_letters = "".join(c for c in x_spec if c not in "bt")
  out_letters = "".join("uvwxyz"[i] for i in range(len(out_shape)))
  low = jnp.einsum(f"{x_spec},{in_letters}r->btr", x, a.astype(x.dtype))
  delta = jnp.einsum(f"btr,r{out_letters}->bt{out_letters}", low, b.astype(x.dtype))
  return delta * (cfg.lora_alpha / rank)


# ---------------------------------------------------------------------------------
# Layers


class RMSNorm(nn.Module):
  """RMS normalisation over the last axis in float32, times (norm_offset + scale)."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_offset else nn.initializers.ones
    scale = self.param("scale", nn.with_logical_partitioning(init, ("norm",)),
                       (x.shape[-1],), as_dtype(cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
    return (normed * (cfg.norm_offset + scale.astype(jnp.float32))).astype(as_dtype(cfg.dtype))


def _attend(q: Array, k: Array, v: Array, bias: Array, dtype) -> Array:
  """softmax(q k^T + bias) v for q [b, kv, g, t, h] (already scaled), k/v [b, kv, s, h]."""
  logits = jnp.einsum("bkgth,bksh->bkgts", q, k, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits + bias, axis=-1).astype(dtype)
  return jnp.einsum("bkgts,bksh->bkgth", probs, v)


class Attention(nn.Module):
  """Grouped-query self-attention with rotary embeddings, optionally over a KV cache."""
  config: TransformerConfig

  def _proj(self, name, x, heads, head_axis, heads_first):
    """x [b, t, d] -> [b, t, heads, head_dim], or [b, heads, t, head_dim] if heads_first."""
    cfg = self.config
    kernel = self.param(f"{name}_kernel", _init(cfg, ("embed", head_axis, "head_dim")),
                        (cfg.d_model, heads, cfg.head_dim), as_dtype(cfg.param_dtype))
    y = _flat_matmul(x, kernel.astype(x.dtype))
    delta = _lora_delta(self, name, x, "btd", (cfg.d_model,), ("embed",), (heads, cfg.head_dim),
                        (head_axis, "head_dim"))
    if delta is not None:
      y = y + delta
    if cfg.qkv_bias:
      bias = self.param(f"{name}_bias",
                        nn.with_logical_partitioning(nn.initializers.zeros, (head_axis, "head_dim")),
                        (heads, cfg.head_dim), as_dtype(cfg.param_dtype))
      y = y + bias.astype(x.dtype)
    if heads_first:
      # Written so that XLA emits the projection straight into the head-major layout.
      y = jnp.swapaxes(y, 1, 2)
    heads_name = f"act_{head_axis}"
    return with_logical_constraint(
        y, ("act_batch", heads_name, "act_length", None) if heads_first
        else ("act_batch", "act_length", heads_name, None))

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array,
               layer_cache: Cache | None, cache_index: Array | None):
    """`mask` is the float32 attention bias from `attention_bias`."""
    cfg = self.config
    dtype = as_dtype(cfg.dtype)
    if layer_cache is None and cfg.attention_impl != "native":
      q = apply_rope(self._proj("q", x, cfg.num_heads, "heads", False), cos, sin)
      k = apply_rope(self._proj("k", x, cfg.num_kv_heads, "kv_heads", False), cos, sin)
      v = self._proj("v", x, cfg.num_kv_heads, "kv_heads", False)
      # The bias carries segments and windows; is_causal lets fused kernels skip the
      # blocks above the diagonal.
      out = jax.nn.dot_product_attention(
          q, k, v, bias=mask[:, :, 0].astype(q.dtype), is_causal=True,
          implementation=cfg.attention_impl)
      return self._output(out, "btnh"), None

    # Heads first: keys and values in [batch, kv_heads, length, head_dim], the layout of
    # the KV cache (decoding reads it without transposing), and queries reshape to
    # [batch, kv_heads, groups, length, head_dim] for free.
    q = apply_rope(self._proj("q", x, cfg.num_heads, "heads", True), cos, sin, True)
    k = apply_rope(self._proj("k", x, cfg.num_kv_heads, "kv_heads", True), cos, sin, True)
    v = self._proj("v", x, cfg.num_kv_heads, "kv_heads", True)
    new_cache = None
    if layer_cache is not None:
      start = (0, 0, cache_index, 0)
      keys = jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(layer_cache["k"].dtype), start)
      values = jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(layer_cache["v"].dtype), start)
      new_cache = {"k": keys, "v": values}
      k, v = keys.astype(dtype), values.astype(dtype)
    batch, length = q.shape[0], q.shape[2]
    groups = cfg.num_heads // cfg.num_kv_heads
    q = q * jnp.asarray(cfg.head_dim ** -0.5, q.dtype)
    q = q.reshape(batch, cfg.num_kv_heads, groups, length, cfg.head_dim)
    block = cfg.attention_block
    if layer_cache is None and 0 < block < length and length % block == 0:
      # Keys after a query block's last slot are masked for every query in it.
      out = jnp.concatenate([
          _attend(q[:, :, :, i:i + block], k[:, :, :i + block], v[:, :, :i + block],
                  mask[..., i:i + block, :i + block], dtype)
          for i in range(0, length, block)], axis=3)
    else:
      out = _attend(q, k, v, mask, dtype)
    out = out.reshape(batch, cfg.num_heads, length, cfg.head_dim)
    return self._output(out, "bnth"), new_cache

  def _output(self, out: Array, layout: str) -> Array:
    """out [b, t, n, h] ('btnh') or [b, n, t, h] ('bnth') -> [b, t, d]."""
    cfg = self.config
    dtype = as_dtype(cfg.dtype)
    names = {"b": "act_batch", "t": "act_length", "n": "act_heads", "h": None}
    out = with_logical_constraint(out, tuple(names[c] for c in layout))
    o_kernel = self.param("o_kernel", _init(cfg, ("heads", "head_dim", "embed")),
                          (cfg.num_heads, cfg.head_dim, cfg.d_model), as_dtype(cfg.param_dtype))
    if layout == "bnth":
      out, layout = jnp.swapaxes(out, 1, 2), "btnh"
    y = _flat_matmul(out.reshape(out.shape[:2] + (-1,)),
                     o_kernel.reshape(-1, cfg.d_model).astype(dtype))
    delta = _lora_delta(self, "o", out, layout, (cfg.num_heads, cfg.head_dim),
                        ("heads", "head_dim"), (cfg.d_model,), ("embed",))
    if delta is not None:
      y = y + delta
    return y


def _flat_matmul(x: Array, kernel: Array) -> Array:
  """x [..., k] @ kernel [k, ...], as one 2-D product of the flattened axes.

  The weight gradient is then x^T @ dy with a single contracting axis; with x in 3-D,
  XLA:CPU contracts (batch, length) by first transposing the activations, a copy that
  the 2-D form avoids.
  """
  y = x.reshape(-1, x.shape[-1]) @ kernel.reshape(kernel.shape[0], -1)
  return y.reshape(x.shape[:-1] + kernel.shape[1:])


class MLP(nn.Module):
  """Gated feed-forward block: down(activation(gate(x)) * up(x))."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dtype, pdtype = as_dtype(cfg.dtype), as_dtype(cfg.param_dtype)
    gate = self.param("gate_kernel", _init(cfg, ("embed", "mlp")), (cfg.d_model, cfg.mlp_dim), pdtype)
    up = self.param("up_kernel", _init(cfg, ("embed", "mlp")), (cfg.d_model, cfg.mlp_dim), pdtype)
    down = self.param("down_kernel", _init(cfg, ("mlp", "embed")), (cfg.mlp_dim, cfg.d_model), pdtype)
    def project(name, inputs, kernel, in_axis, out_axis):
      y = _flat_matmul(inputs, kernel.astype(dtype))
      delta = _lora_delta(self, name, inputs, "btd", (kernel.shape[0],), (in_axis,),
                          (kernel.shape[1],), (out_axis,))
      return y if delta is None else y + delta

    h = (_activation(cfg.activation)(project("gate", x, gate, "embed", "mlp"))
         * project("up", x, up, "embed", "mlp"))
    h = with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
    return project("down", h, down, "mlp", "embed")


class DecoderLayer(nn.Module):
  """Pre-norm decoder block: attention, then the MLP, each added to the residual stream."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, layer_cache: Cache | None, cos: Array, sin: Array,
               mask: Array, cache_index: Array | None):
    cfg = self.config
    h, new_cache = Attention(cfg, name="attention")(
        RMSNorm(cfg, name="pre_attention_norm")(x), cos, sin, mask, layer_cache, cache_index)
    x = x + h
    x = x + MLP(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_norm")(x))
    x = with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
    return x, new_cache


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
  """Decoder-only LM.

  `apply({'params': p}, tokens)` returns logits [batch, length, vocab].
  `positions` default to 0..length-1 (offset by the cache fill when a cache is given),
  `segment_ids` to all ones; tokens of different segments never attend to each other
  (packing), and segment 0 marks padding. With `cache` (from `init_cache`) the call
  returns `(output, new_cache)`. `output` picks what is returned: 'logits', 'hidden'
  (final normalised hidden states [batch, length, d_model], for scalar heads) or
  'both' (a `(logits, hidden)` pair).
  """
  config: TransformerConfig

  def setup(self):
    """The embedder, the decoder layers (scanned and/or rematerialised as configured), the
    final norm and, unless embeddings are tied, the output head."""
    cfg = self.config
    self.embedder = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=as_dtype(cfg.dtype),
        param_dtype=as_dtype(cfg.param_dtype),
        embedding_init=_init(cfg, ("vocab", "embed")),
        name="embedder")
    layer_cls = DecoderLayer
    if cfg.remat_policy != "none":
      if cfg.remat_policy not in _REMAT_POLICIES:
        raise ValueError(f"unknown remat_policy {cfg.remat_policy!r}; expected none, "
                         f"{', '.join(_REMAT_POLICIES)}")
      layer_cls = nn.remat(DecoderLayer, policy=_REMAT_POLICIES[cfg.remat_policy],
                           prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(
          layer_cls,
          variable_axes={"params": 0},
          split_rngs={"params": True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
          length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, name="layers")
    else:
      self.layers = [layer_cls(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg, name="final_norm")
    if not cfg.tie_embeddings:
      self.lm_head = self.param("lm_head", _init(cfg, ("embed", "vocab")),
                                (cfg.d_model, cfg.vocab_size), as_dtype(cfg.param_dtype))

  def __call__(self, tokens: Array, positions: Array | None = None,
               segment_ids: Array | None = None, cache: Cache | None = None,
               output: Literal["logits", "hidden", "both"] = "logits"):
    cfg = self.config
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    batch, length = tokens.shape
    offset = cache["index"] if cache is not None else 0
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32) + offset, (batch, length))
    if segment_ids is None:
      segment_ids = jnp.ones((batch, length), jnp.int32)

    x = self.embedder(tokens)
    if cfg.embed_scale:
      x = x * jnp.asarray(cfg.d_model ** 0.5, x.dtype)
    x = with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
    cos, sin = rope_tables(positions, cfg)

    query_slots = jnp.arange(length, dtype=jnp.int32) + offset
    if cache is None:
      mask = attention_bias(attention_mask(query_slots, query_slots, segment_ids, segment_ids,
                                           positions, positions, cfg.sliding_window))
      key_positions = key_segments = None
    else:
      key_positions = jax.lax.dynamic_update_slice(cache["positions"], positions.astype(jnp.int32),
                                                   (0, offset))
      key_segments = jax.lax.dynamic_update_slice(cache["segment_ids"],
                                                  segment_ids.astype(jnp.int32), (0, offset))
      key_slots = jnp.arange(key_positions.shape[1], dtype=jnp.int32)
      mask = attention_bias(attention_mask(query_slots, key_slots, segment_ids, key_segments,
                                           positions, key_positions, cfg.sliding_window))

    layer_caches = None if cache is None else cache["layers"]
    if cfg.scan_layers:
      x, new_layers = self.layers(x, layer_caches, cos, sin, mask, offset)
    else:
      new_layers = []
      for i, layer in enumerate(self.layers):
        x, new_layer = layer(x, None if layer_caches is None else layer_caches[i],
                             cos, sin, mask, offset)
        new_layers.append(new_layer)
      new_layers = tuple(new_layers)

    hidden = self.final_norm(x)
    result: Any
    if output == "hidden":
      result = hidden
    else:
      logits = self.logits_from_hidden(hidden)
      result = logits if output == "logits" else (logits, hidden)
    if cache is None:
      return result
    new_cache = {"index": offset + length, "positions": key_positions,
                 "segment_ids": key_segments, "layers": new_layers}
    return result, new_cache

  def logits_from_hidden(self, hidden: Array) -> Array:
    """float32 logits [batch, length, vocab] of final hidden states."""
    cfg = self.config
    if cfg.tie_embeddings:
      logits = self.embedder.attend(hidden)
    else:
      logits = hidden @ self.lm_head.astype(hidden.dtype)
    logits = logits.astype(jnp.float32)
    return with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))


def init_cache(config: TransformerConfig, batch_size: int, max_length: int,
               dtype: Any = None) -> Cache:
  """An empty KV cache holding `max_length` slots per row."""
  dtype = as_dtype(dtype or config.dtype)
  kv_shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
  if config.scan_layers:
    stacked = (config.num_layers,) + kv_shape
    layers: Any = {"k": jnp.zeros(stacked, dtype), "v": jnp.zeros(stacked, dtype)}
  else:
    layers = tuple({"k": jnp.zeros(kv_shape, dtype), "v": jnp.zeros(kv_shape, dtype)}
                   for _ in range(config.num_layers))
  return {
      "index": jnp.zeros((), jnp.int32),
      "positions": jnp.zeros((batch_size, max_length), jnp.int32),
      "segment_ids": jnp.zeros((batch_size, max_length), jnp.int32),
      "layers": layers,
  }


def cache_logical_axes(config: TransformerConfig) -> Cache:
  """Logical axis names of every cache leaf, in `init_cache`'s structure."""
  kv = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")
  if config.scan_layers:
    layers: Any = {"k": ("layers",) + kv, "v": ("layers",) + kv}
  else:
    layers = tuple({"k": kv, "v": kv} for _ in range(config.num_layers))
  return {"index": (), "positions": ("cache_batch", "cache_length"),
          "segment_ids": ("cache_batch", "cache_length"), "layers": layers}
