"""PPO settings: rollout, reward shaping and update hyper-parameters in one dataclass."""

from __future__ import annotations

import dataclasses

from align_jax.training.checkpoints import RECORD_IF_SET


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Rollout, reward and update settings (defaults follow common RLHF practice).

  rollout_batch_size: prompts per iteration (global), one response each.
  mini_batch_size: rows per optimizer update; num_epochs passes over the rollouts.
  num_micro_batches: gradient accumulation inside a mini-batch.
  max_prompt_len: prompts are left-padded to this many tokens (longer ones skipped).
  kl_coef: beta of the per-token KL penalty; with target_kl set, beta adapts towards
    it (horizon in episodes). kl_estimator: 'k1' or 'k3' (clamped at kl_clamp).
  kl_clamp_min: with 'k1', the per-token log-ratio is clamped below at this value
    (AlpacaFarm: 0, so tokens the policy finds less likely than the reference add no
    bonus); this biases the KL estimate upwards. None: no clamp.
  reward_scale: multiplies the reward terms' sequence total and dense rewards, before
    the missing-EOS replacement and the clip (so both are on the scaled scale).
  missing_eos_penalty: replaces the sequence score of responses without EOS (None: keep).
  score_clip: clip sequence scores to [-score_clip, score_clip] (None: no clip).
  whiten_rewards: before GAE, the per-token rewards (score, dense terms and KL penalty)
    over the rollout batch's response tokens: True (trl's masked whitening)
    (x - mean) / std + mean; 'scale' x / std. True turns every reward-free response
    token's 0 into mean * (1 - 1 / std), a per-token reward that adds up with length
    (its sign is the mean's when std > 1, the opposite when std < 1): a push towards
    shorter or longer responses that the reward does not ask for. AlpacaFarm's PPO (the
    thesis' systems) whitens the whole right-padded [batch, max_new_tokens] reward
    array, so that shift lands on every row alike and biases nothing; 'scale' is its
    masked equivalent (the shift dropped; AlpacaFarm's std also counts the padding, so
    the two scales differ). False: rewards as shaped.
  schedule_per_iteration: the learning-rate schedule advances once per PPO iteration
    (every update of an iteration uses one learning rate; the optimizer's warmup_steps
    and total_steps count iterations) instead of once per optimizer update.
  value_init: 'reward_model' (the value model starts as a copy of the reward model)
    or 'policy' (the policy's weights and a fresh head).
  exact_ratio: recompute the forward pass in the backward pass (one more forward per
    update) so that the first mini-batch's ratio is exactly 1, not 1 +- 1e-8.
  value_learning_rate: the value model's peak learning rate, with an AdamW and a
    gradient clip of its own (OpenRLHF's critic learning rate); the same schedule
    shape as the policy's. None: one optimizer for both at the policy's rate. A value
    head that starts fresh (value_init='policy') learns nothing useful in a short run
    at a policy's fine-tuning rate, and its advantages are then the whitened rewards
    minus noise.
  """
  rollout_batch_size: int = 64
  mini_batch_size: int = 16
  num_epochs: int = 4
  num_micro_batches: int = 1
  max_prompt_len: int = 128
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  clip_ratio: float = 0.2
  value_clip: float | None = 0.2
  value_loss_coef: float = 0.5
  entropy_coef: float = 0.0
  gamma: float = 1.0
  lam: float = 0.95
  kl_coef: float = 0.05
  target_kl: float | None = None
  kl_horizon: int = 10_000
  kl_estimator: str = "k1"
  kl_clamp: float = 20.0
  kl_clamp_min: float | None = None
  reward_scale: float = 1.0
  missing_eos_penalty: float | None = None
  score_clip: float | None = None
  whiten_rewards: bool | str = False
  whiten_advantages: bool = True
  schedule_per_iteration: bool = False
  value_init: str = "reward_model"
  sampler_batch_size: int = 0          # 0: the whole rollout batch in one compiled call
  exact_ratio: bool = True             # remat the loss's forward: first ratio exactly 1
  value_learning_rate: float | None = dataclasses.field(default=None,
                                                       metadata={RECORD_IF_SET: True})

  def __post_init__(self):
    if self.rollout_batch_size % self.mini_batch_size:
      raise ValueError(f"PPOConfig.rollout_batch_size={self.rollout_batch_size} must be a "
                       f"multiple of mini_batch_size={self.mini_batch_size}")
    if self.mini_batch_size % self.num_micro_batches:
      raise ValueError(f"PPOConfig.mini_batch_size={self.mini_batch_size} must be a multiple "
                       f"of num_micro_batches={self.num_micro_batches}")
    if self.whiten_rewards not in (False, True, "scale"):
      raise ValueError(f"PPOConfig.whiten_rewards must be False, True or 'scale', got "
                       f"{self.whiten_rewards!r}")
    if self.kl_estimator not in ("k1", "k3"):
      raise ValueError(f"PPOConfig.kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
    if self.kl_clamp_min is not None and self.kl_estimator != "k1":
      raise ValueError("PPOConfig.kl_clamp_min applies to the 'k1' estimator only, got "
                       f"kl_estimator={self.kl_estimator!r}")
    if self.value_learning_rate is not None and not self.value_learning_rate > 0:
      raise ValueError(f"PPOConfig.value_learning_rate must be > 0 or None, got "
                       f"{self.value_learning_rate}")
    if self.value_init not in ("reward_model", "policy"):
      raise ValueError("PPOConfig.value_init must be 'reward_model' or 'policy', got "
                       f"{self.value_init!r}")

  @property
  def updates_per_iteration(self) -> int:
    return self.num_epochs * (self.rollout_batch_size // self.mini_batch_size)
