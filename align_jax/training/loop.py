"""The one training loop every trainer uses.

`train_loop` owns what is the same for SFT, reward models and PPO: resuming from the
latest checkpoint (state, PRNG key and data position), the jitted sharded step,
metrics (metrics.jsonl, TensorBoard, a progress bar), periodic evaluation, hooks,
asynchronous checkpoints, the NaN guard, and stopping on SIGINT/SIGTERM (Ctrl-C, a TPU
VM's preemption notice) with a checkpoint of the last finished step. A trainer supplies
a pure `step_fn(state, batch, frozen) -> (state, metrics)` and its data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from align_jax import fs
from align_jax.parallel.partitioning import (LogicalRules, logical_sharding, sharding_context)
from align_jax.training.checkpoints import Checkpointer
from align_jax.training.metrics import MetricsWriter


@flax.struct.dataclass
class TrainState:
  """What a training step updates: trainable parameters, optimizer state, step, key."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32), so checkpoints stay plain arrays


class BatchSource(Protocol):
  """An iterator of batches (dicts of numpy arrays) that knows where it stands.

  `position` is stored with every checkpoint and handed back to `make_batches` on
  resume: the number of batches yielded (data iterators) or any JSON value (an
  on-policy source keeps e.g. its prompt position and adaptive KL coefficient).
  Optional: `observe(state)` is called with the current state before each batch is
  drawn (on-policy sources generate with the current parameters); `stats`, a dict of
  numbers logged each step (names without '/' go under 'data/').
  """
  position: Any

  def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]: ...

  def __next__(self) -> Mapping[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Loop cadence. Checkpoints go to WORKDIR/checkpoints (the best to checkpoints_best)."""
  total_steps: int = 1000
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  eval_every: int = 0                  # 0: evaluate only at the end (if an eval_fn is given)
  keep_best_by: str | None = None      # an eval metric name, e.g. 'eval/loss'
  best_mode: str = "min"
  log_every: int = 1
  progress_bar: bool = True


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stopped without saving that state."""


class TrainingInterrupted(SystemExit):
  """SIGINT or SIGTERM stopped training after a finished step, whose checkpoint is saved.

  A SystemExit with status 128 + the signal number (130 for SIGINT, 143 for SIGTERM):
  left uncaught the process exits without a traceback, and `except Exception` does
  not swallow it, so a caller stops too. Rerunning the same command resumes.
  """

  def __init__(self, step: int, signum: int, directory: str):
    super().__init__(128 + signum)
    self.step, self.signum, self.directory = step, signum, directory


class _StopSignals:
  """While installed (main thread only), SIGINT and SIGTERM ask training to stop after
  the current step instead of raising at once; a repeated signal is ignored, so it
  cannot cut the checkpoint short."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def install(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      return
    for signum in self.SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    self._previous.clear()

  def _handle(self, signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if self.signum is None:
      self.signum = signum
      message = f"[align_jax] {name}: stopping after the current step to save a checkpoint"
    else:
      message = f"[align_jax] {name} ignored: already stopping to save a checkpoint"
    os.write(sys.stderr.fileno(), (message + "\n").encode())  # no buffered I/O in a handler


@dataclasses.dataclass
class Hook:
  """A callback `fn(step, state, metrics)` that the loop calls every `every` steps."""
  every: int
  fn: Callable[[int, TrainState, Mapping[str, float]], None]


def init_train_state(params: Any, optimizer: optax.GradientTransformation, seed: int,
                     params_shardings: Any | None = None, mesh: Mesh | None = None) -> TrainState:
  """A fresh state; the optimizer state is created sharded like the parameters."""
  def init(params):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))
  if mesh is None:
    return jax.jit(init)(params)
  return jax.jit(init, out_shardings=state_shardings(optimizer, params, params_shardings, mesh)
                 )(params)


def state_shardings(optimizer: optax.GradientTransformation, params: Any, params_shardings: Any,
                    mesh: Mesh) -> TrainState:
  """Shardings of a TrainState: optimizer moments follow their parameters."""
  replicated = NamedSharding(mesh, PartitionSpec())

  def opt_shardings(optimizer, params, params_shardings):
    parts = getattr(optimizer, "parts", None)   # optimizer.by_part: a state per part
    if parts is not None:
      return {name: opt_shardings(t, params[name], params_shardings[name])
              for name, t in parts.items()}
    abstract_opt = jax.eval_shape(optimizer.init, params)
    return optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params_shardings,
                                 transform_non_params=lambda _: replicated)

  return TrainState(step=replicated, params=params_shardings,
                    opt_state=opt_shardings(optimizer, params, params_shardings),
                    rng=replicated)


def batch_shardings(batch: Mapping[str, np.ndarray], mesh: Mesh, rules: LogicalRules):
  """Shardings of a global batch built from every host's rows of `batch`.

  With several hosts the batch axis must really be split across them, or each host's
  different rows would be taken for copies of one array.
  """
  shardings = {}
  for k, v in batch.items():
    global_shape = (np.shape(v)[0] * jax.process_count(),) + np.shape(v)[1:]
    sharding = logical_sharding(("act_batch",) + (None,) * (np.ndim(v) - 1), rules, mesh,
                                global_shape)
    first = sharding.spec[0] if len(sharding.spec) else None
    axes = () if first is None else ((first,) if isinstance(first, str) else tuple(first))
    split = math.prod(mesh.shape[a] for a in axes)
    if split % jax.process_count():
      raise ValueError(f"batch feature {k!r}: the global batch of {global_shape[0]} rows "
                       f"cannot be split over the mesh's data/fsdp axes "
                       f"{dict(mesh.shape)}; choose a batch size divisible by data*fsdp")
    shardings[k] = sharding
  return shardings


def global_batch(batch: Mapping[str, np.ndarray], shardings) -> dict[str, jax.Array]:
  """One global array per feature from this host's rows."""
  return {k: jax.make_array_from_process_local_data(
              shardings[k], np.asarray(v),
              (np.shape(v)[0] * jax.process_count(),) + np.shape(v)[1:])
          for k, v in batch.items()}


def _global_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
  """A batch source's stats as logged: a data iterator's counts (names without '/')
  summed over the hosts (each counts its own shard, every host calls this together),
  under 'data/'; named stats (e.g. rollouts', the same on every host) as they are."""
  counts = sorted(k for k in stats if "/" not in k)
  out = {k: v for k, v in stats.items() if "/" in k}
  if counts and jax.process_count() > 1:
    from jax.experimental import multihost_utils
    summed = np.asarray(multihost_utils.process_allgather(
        np.array([stats[k] for k in counts], np.float64))).sum(axis=0)
    out.update({f"data/{k}": int(v) if isinstance(stats[k], int) else float(v)
                for k, v in zip(counts, summed)})
  else:
    out.update({f"data/{k}": stats[k] for k in counts})
  return out


def default_batch_tokens(batch: Mapping[str, np.ndarray]) -> int:
  """Tokens processed in a batch: non-padding positions (segment ids > 0) where known,
  else the size of its first feature. Trainers whose batches count otherwise pass
  their own `batch_tokens` to `train_loop`."""
  if "segment_ids" in batch:
    return int((np.asarray(batch["segment_ids"]) > 0).sum())
  first = next(iter(batch.values()))
  return int(np.prod(np.shape(first)))


def train_loop(*, workdir: str, step_fn: Callable, init_state: Callable[[], TrainState],
               make_batches: Callable[[int], BatchSource], config: LoopConfig, mesh: Mesh,
               rules: LogicalRules, shardings: TrainState, frozen: Any = None,
               eval_fn: Callable[[TrainState, Any], Mapping[str, float]] | None = None,
               hooks: Sequence[Hook] = (), record: Mapping[str, Any] | None = None,
               batch_tokens: Callable[[Mapping[str, np.ndarray]], int] = default_batch_tokens,
               progress_metrics: Sequence[str] = (),
               ) -> tuple[TrainState, dict[str, float]]:
  """Trains to `config.total_steps`, resuming from WORKDIR/checkpoints if present.

  init_state: builds a fresh TrainState (only called when there is no checkpoint).
  make_batches(position): a batch source positioned at `position` (0 for a fresh run).
  shardings: the TrainState's shardings (see `state_shardings`).
  frozen: parameters the step reads but does not train (a LoRA base, a reference).
  record: JSON facts stored with every checkpoint and checked on resume
    (`model_config`, `vocabulary`).
  batch_tokens(batch): tokens a batch holds (for tokens/s).
  progress_metrics: metric names the progress bar shows besides loss and tokens/s.
  Returns the final state and the last metrics.

  SIGINT or SIGTERM during training: the current step finishes, its checkpoint is
  saved (synchronously), and TrainingInterrupted is raised; a resume drops the
  metrics.jsonl records written after its checkpoint, so each step is logged once.
  """
  record = dict(record or {})
  checkpointer = Checkpointer(fs.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
                              save_every=config.checkpoint_every,
                              async_save=config.async_checkpoints)
  best = None
  if config.keep_best_by:
    best = Checkpointer(fs.join(workdir, "checkpoints_best"), keep=1, async_save=False)

  latest = checkpointer.latest_step()
  # A resume drops what an attempt logged after its checkpoint (a fresh start: all of it).
  writer = MetricsWriter(workdir, resumed_from=latest or 0)
  if latest is not None:
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            jax.eval_shape(init_state), shardings)
    state, saved = checkpointer.restore(latest, abstract, expected=record)
    position = saved["data_position"]
    writer.event(latest, event="resumed", data_position=position)
    logging.info("resumed from %s at step %d (data position %s)", checkpointer.directory,
                 latest, position)
    print(f"[align_jax] resuming from step {latest}", flush=True)
  else:
    state = init_state()
    position = 0
  start_step = int(jax.device_get(state.step))
  batches = make_batches(position)

  step_jit = None
  metrics: dict[str, float] = {}
  best_value = None
  if best is not None and best.latest_step() is not None:  # a resumed run keeps its best
    best_value = float(best.read_record(best.latest_step())[config.keep_best_by])
  last_good = latest
  bar = tqdm(total=config.total_steps, initial=start_step, desc="train", unit="step",
             dynamic_ncols=True, disable=not config.progress_bar or jax.process_index() != 0)
  tokens_window, time_window = 0, time.perf_counter()

  def evaluate(step: int) -> None:
    nonlocal best_value
    with sharding_context(mesh, rules):
      results = {k: float(v) for k, v in eval_fn(state, frozen).items()}
    writer.write(step, results, replace=step == latest)  # a finished run evaluated again
    metrics.update(results)
    if best is not None:
      if config.keep_best_by not in results:
        raise KeyError(f"keep_best_by={config.keep_best_by!r} is not among the eval metrics "
                       f"{sorted(results)}")
      value = results[config.keep_best_by]
      better = best_value is None or (value < best_value if config.best_mode == "min"
                                      else value > best_value)
      if better:
        best_value = value
        best.save(step, state, {**record, "step": step, "data_position": position,
                                config.keep_best_by: value})

  def stop_if_interrupted(step: int) -> None:
    if stop.signum is None:
      return
    checkpointer.save(step, state, {**record, "step": step, "data_position": position},
                      force=True)
    checkpointer.wait()
    bar.close()
    writer.flush()
    logging.info("%s at step %d: checkpoint saved", signal.Signals(stop.signum).name, step)
    print(f"[align_jax] interrupted at step {step}: checkpoint saved in "
          f"{checkpointer.directory}; rerun the same command to resume", file=sys.stderr,
          flush=True)
    raise TrainingInterrupted(step, stop.signum, checkpointer.directory)

  def fetch() -> tuple[Mapping[str, np.ndarray], Any, dict[str, Any]]:
    """The next batch with the source's position and stats just after it."""
    batch = next(batches)
    return batch, batches.position, dict(getattr(batches, "stats", {}))

  # A source that does not watch the state (`observe`) is read one batch ahead, while the
  # device runs the step: the host prepares data as the step computes. Checkpoints and
  # metrics use the position and stats of the batch the step consumed.
  read_ahead = not hasattr(batches, "observe")
  ahead = None
  stop = _StopSignals()
  stop.install()
  try:
    with sharding_context(mesh, rules):
      for step in range(start_step + 1, config.total_steps + 1):
        if not read_ahead:
          batches.observe(state)
        batch, position, data_stats = ahead or fetch()
        ahead = None
        if step_jit is None:
          features_shardings = batch_shardings(batch, mesh, rules)
          step_jit = jax.jit(step_fn, in_shardings=(shardings, features_shardings, None),
                             out_shardings=(shardings, None), donate_argnums=(0,))
        started = time.perf_counter()
        state, step_metrics = step_jit(state, global_batch(batch, features_shardings), frozen)
        if read_ahead and step < config.total_steps:
          ahead = fetch()
        step_metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        step_metrics["time/train_s"] = time.perf_counter() - started
        loss = step_metrics.get("loss", 0.0)
        if not math.isfinite(loss):
          checkpointer.wait()
          kept = (f"the last good checkpoint (step {last_good}) is kept in "
                  f"{checkpointer.directory}" if last_good is not None else
                  "no checkpoint had been saved yet")
          raise NonFiniteLossError(f"loss is {loss} at step {step}; stopping without saving "
                                   f"this state; {kept}")
        tokens_window += batch_tokens(batch) * jax.process_count()  # hosts hold equal shares
        if step % config.log_every == 0 or step == config.total_steps:
          elapsed = time.perf_counter() - time_window
          step_metrics["tokens_per_s"] = tokens_window / max(elapsed, 1e-9)
          tokens_window, time_window = 0, time.perf_counter()
          step_metrics.update(_global_stats(data_stats))
          writer.write(step, step_metrics)
          postfix = {"loss": f"{loss:.4f}", "tok_s": f"{step_metrics['tokens_per_s']:.0f}"}
          postfix.update({name.split("/")[-1]: f"{step_metrics[name]:.3f}"
                          for name in progress_metrics if name in step_metrics})
          bar.set_postfix(postfix)
        metrics.update(step_metrics)
        bar.update(1)
        for hook in hooks:
          if step % hook.every == 0:
            hook.fn(step, state, step_metrics)
        if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
          evaluate(step)
        if step % config.checkpoint_every == 0 or step == config.total_steps:
          checkpointer.save(step, state, {**record, "step": step, "data_position": position},
                            force=step == config.total_steps)
          last_good = step
        stop_if_interrupted(step)
    if eval_fn is not None and (not config.eval_every or config.total_steps % config.eval_every):
      evaluate(config.total_steps)
    stop_if_interrupted(int(jax.device_get(state.step)))
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
    if best is not None:
      best.close()
    stop.restore()  # last: a signal while the checkpoints above finish is still deferred
  return state, metrics
