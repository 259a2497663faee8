"""A small training set-up shared by the training tests and their subprocess workers."""

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.models import Transformer, TransformerConfig, init_params, param_shardings
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.training import (LoopConfig, OptimizerConfig, TrainState, config_record,
                                init_train_state, make_lm_step, make_optimizer, state_shardings,
                                train_loop)

# gin flags for a one-layer d_model 32 model of gin/models/tiny.gin over a 320-token vocabulary.
TINY_MODEL_FLAGS = ["--gin_file=gin/models/tiny.gin", "--gin.VOCAB_SIZE=320",
                    "--gin.TransformerConfig.num_layers=1", "--gin.TransformerConfig.d_model=32",
                    "--gin.TransformerConfig.mlp_dim=64", "--gin.TransformerConfig.head_dim=8"]

CONFIG = TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=64)


class SyntheticBatches:
  """Deterministic packed LM batches: batch k depends only on (seed, k)."""

  def __init__(self, start: int = 0, batch: int = 8, length: int = 16, vocab: int = 97,
               seed: int = 0):
    self.position, self.batch, self.length, self.vocab, self.seed = start, batch, length, vocab, seed

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng([self.seed, self.position])
    self.position += 1
    # A learnable pattern: each row counts upwards from a random start (mod vocab).
    starts = rng.integers(3, self.vocab, (self.batch, 1))
    seq = (starts + np.arange(self.length + 1)[None]) % self.vocab
    segments = np.ones((self.batch, self.length), np.int32)
    segments[:, self.length // 2:] = 2
    positions = np.concatenate([np.arange(self.length // 2)] * 2)[None].repeat(self.batch, 0)
    weights = rng.random((self.batch, self.length)) < 0.8
    return {"input_tokens": seq[:, :-1].astype(np.int32), "target_tokens": seq[:, 1:].astype(np.int32),
            "loss_weights": weights.astype(np.float32), "positions": positions.astype(np.int32),
            "segment_ids": segments}


def run_training(workdir: str, total_steps: int, checkpoint_every: int = 4, config=CONFIG,
                 async_checkpoints: bool = True, learning_rate: float = 3e-3, seed: int = 0):
  model = Transformer(config)
  mesh = create_mesh((1, 1, 1))
  opt_config = OptimizerConfig(learning_rate=learning_rate, warmup_steps=2,
                               total_steps=total_steps)
  optimizer = make_optimizer(opt_config)
  p_shardings = param_shardings(model, mesh, DEFAULT_RULES)
  shardings = state_shardings(optimizer, jax_eval_params(model), p_shardings, mesh)
  return train_loop(
      workdir=workdir, step_fn=make_lm_step(model, optimizer, opt_config),
      init_state=lambda: init_train_state(init_params(model, __import__("jax").random.key(seed),
                                                      mesh), optimizer, seed, p_shardings, mesh),
      make_batches=lambda position: SyntheticBatches(position),
      config=LoopConfig(total_steps=total_steps, checkpoint_every=checkpoint_every,
                        async_checkpoints=async_checkpoints, progress_bar=False),
      mesh=mesh, rules=DEFAULT_RULES, shardings=shardings,
      record={"model_config": config_record(config)})


def jax_eval_params(model):
  from align_jax.models import abstract_params
  return abstract_params(model)


def scalar_state() -> TrainState:
  """A train state whose parameters are one float (for loop mechanics without a model)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=jnp.zeros(()), opt_state=(),
                    rng=jax.random.key_data(jax.random.key(0)))


def scalar_shardings(mesh) -> TrainState:
  """The shardings of `scalar_state` on `mesh` (everything replicated)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return TrainState(step=replicated, params=replicated, opt_state=(), rng=replicated)


def counting_step(state, batch, frozen):
  """A step that adds 1 to the scalar parameters, with a constant loss."""
  del batch, frozen
  return state.replace(step=state.step + 1, params=state.params + 1.0), {"loss": 1.0}
