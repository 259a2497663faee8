"""Training: the shared loop, optimizers, checkpoints, losses, the LM, DPO and
reward-model trainers, and the one loader of trained runs."""

from align_jax.training.checkpoints import Checkpointer, check_compatible, config_record, restore_params
from align_jax.training.dpo import dpo_loss_sums, response_logprobs
from align_jax.training.lm_trainer import (DataConfig, train_dpo, train_lm,
                                          train_reward_model)
from align_jax.training.loop import (Hook, LoopConfig, NonFiniteLossError, TrainState,
                                     init_train_state, state_shardings, train_loop)
from align_jax.training.losses import accumulate_gradients, lm_loss_sums, token_nll
from align_jax.training.metrics import MetricsWriter, read_metrics
from align_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from align_jax.training.reward import (SequenceScorer, fit_normalization, pairwise_loss_sums,
                                       process_loss_sums, sequence_scores)
from align_jax.training.runs import LoadedRun, export_hf, load_run, vocabulary_record
from align_jax.training.sft import make_lm_step, make_train_step
