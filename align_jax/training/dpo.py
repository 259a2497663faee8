"""Direct preference optimisation: a language model trained on preference pairs against a
frozen reference, whose log-ratio to that reference is an implicit reward.

For a response y to a prompt x the implicit reward is

  r(x, y) = beta * sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]

over the response's trained tokens (the EOS included), and the loss of a pair is
-log sigmoid(r(x, chosen) - r(x, rejected)). The partial sums of r up to the end of a
step are that step's score: a process reward model trained from outcome comparisons
alone (`align_jax.rewards.ImplicitProcessRewardModel` reads it).

The loss follows the repository's convention: sums over real pairs with the pair count
as the weight (`align_jax.training.losses`). The parameters it sees are the policy's
with the reference's under REFERENCE_KEY; the trainer keeps the reference frozen.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from align_jax.training.losses import head_chunk_rows, output_matrix, output_token_logprobs

REFERENCE_KEY = "reference"


def split_reference(params: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
  """(policy parameters, reference parameters) of a merged tree."""
  if REFERENCE_KEY not in params:
    raise ValueError(f"DPO needs the reference's parameters under {REFERENCE_KEY!r}; got the "
                     f"keys {sorted(params)}")
  return {k: v for k, v in params.items() if k != REFERENCE_KEY}, params[REFERENCE_KEY]


def response_logprobs(model, params: Any, batch: Mapping[str, jax.Array], prefix: str = ""
                      ) -> jax.Array:
  """Each row's summed log-probability of its loss-weighted targets, float32 [batch].

  The output head runs a chunk of tokens at a time (`output_token_logprobs`), so the
  [batch, length, vocab] logits never exist at once, forward or backward."""
  hidden = model.apply({"params": params}, batch[prefix + "input_tokens"],
                       batch[prefix + "positions"], batch[prefix + "segment_ids"],
                       output="hidden")
  w_out = output_matrix(model, params)   # in its own dtype: its gradient sums in it
  logprobs = output_token_logprobs(hidden, w_out, batch[prefix + "target_tokens"],
                                   head_chunk_rows(w_out.shape[-1]))
  weights = batch[prefix + "loss_weights"].astype(jnp.float32)
  return (logprobs * weights).sum(-1)


def dpo_loss_sums(model, params: Any, batch: Mapping[str, jax.Array], beta: float = 0.1):
  """-log sigmoid(r_chosen - r_rejected) summed over the real pairs of a preference
  batch, with the sums of pair accuracy, margin and both implicit rewards."""
  policy, reference = split_reference(params)
  reference = jax.lax.stop_gradient(reference)
  rewards = {}
  for side in ("chosen", "rejected"):
    ratio = (response_logprobs(model, policy, batch, side + "_")
             - response_logprobs(model, reference, batch, side + "_"))
    rewards[side] = beta * ratio
  real = (batch["chosen_segment_ids"][:, 0] > 0).astype(jnp.float32)
  margin = rewards["chosen"] - rewards["rejected"]
  loss = -jax.nn.log_sigmoid(margin)
  return (loss * real).sum(), real.sum(), {
      "correct": ((margin > 0).astype(jnp.float32) * real).sum(),
      "margin": (margin * real).sum(),
      "chosen_reward": (rewards["chosen"] * real).sum(),
      "rejected_reward": (rewards["rejected"] * real).sum()}
