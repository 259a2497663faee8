"""The training loop, optimizers, checkpoints, metrics and losses shared by every trainer."""

from align_jax.training.checkpoints import Checkpointer, check_compatible, config_record, restore_params
from align_jax.training.loop import (Hook, LoopConfig, NonFiniteLossError, TrainState,
                                     init_train_state, state_shardings, train_loop)
from align_jax.training.losses import accumulate_gradients, lm_loss_sums, token_nll
from align_jax.training.metrics import MetricsWriter, read_metrics
from align_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from align_jax.training.reward import (fit_normalization, pairwise_loss_sums, process_loss_sums,
                                       sequence_scores)
from align_jax.training.sft import make_lm_step, make_train_step
