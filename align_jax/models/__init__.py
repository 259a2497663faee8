"""Models: the decoder-only transformer, its KV cache, and scalar heads."""

from align_jax.models.heads import ScalarHead, TransformerWithHead
from align_jax.models.transformer import (
    RopeScaling,
    Transformer,
    TransformerConfig,
    cache_logical_axes,
    init_cache,
)
from align_jax.models.init import abstract_params, init_params, param_logical_axes, param_shardings
from align_jax.models.lora import init_lora_params, merge_lora, merge_params, split_params
from align_jax.models.transformer import LORA_TARGETS, is_lora_path
