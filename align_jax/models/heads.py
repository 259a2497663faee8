"""Scalar / per-token heads on the final hidden states (reward, value, process reward)."""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from align_jax.models.transformer import Transformer, TransformerConfig, as_dtype


class ScalarHead(nn.Module):
  """Linear map from d_model to `num_outputs` scores per token.

  The kernel starts with std 1/sqrt(d_model + 1), the bias at zero.
  """
  num_outputs: int = 1
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    d = hidden.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.normal(1.0 / (d + 1) ** 0.5), ("embed", "head_out")),
        (d, self.num_outputs), as_dtype(self.param_dtype))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("head_out",)),
                      (self.num_outputs,), as_dtype(self.param_dtype))
    scores = hidden.astype(jnp.float32) @ kernel.astype(jnp.float32) + bias.astype(jnp.float32)
    return scores[..., 0] if self.num_outputs == 1 else scores


class TransformerWithHead(nn.Module):
  """A `Transformer` backbone whose final hidden states feed a `ScalarHead`.

  Returns per-token scores [batch, length] (or [batch, length, num_outputs]); with
  `output='both'`, a `(lm_logits, scores)` pair (e.g. for a policy with a value head).
  Parameters live under `backbone` and `head`, so a language model's parameters can be
  dropped in as the backbone.
  """
  config: TransformerConfig
  num_outputs: int = 1

  def setup(self):
    self.backbone = Transformer(self.config)
    self.head = ScalarHead(self.num_outputs, self.config.param_dtype)

  def __call__(self, tokens, positions=None, segment_ids=None,
               output: Literal["scores", "both"] = "scores"):
    if output == "scores":
      hidden = self.backbone(tokens, positions, segment_ids, output="hidden")
      return self.head(hidden)
    logits, hidden = self.backbone(tokens, positions, segment_ids, output="both")
    return logits, self.head(hidden)
