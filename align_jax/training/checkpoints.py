"""Checkpoints: orbax, asynchronous, the last K kept, plus the best by an eval metric.

A checkpoint holds the train state (trainable parameters, optimizer state, step, PRNG
key) and a JSON record: the step, the data position, the model config and the
vocabulary it was trained with. Restoring compares that record and every array's
shape with what the current run expects, and says exactly what differs.

Checkpoints live in a local folder (a `file://` URL names one) or under a gs:// or s3://
URL, which orbax writes through tensorstore; `checkpoint_location` refuses any other
scheme (e.g. TensorFlow's in-memory ram://) before anything is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from align_jax import fs

# URL schemes orbax reads and writes checkpoints under, besides local folders and file://.
CHECKPOINT_SCHEMES = ("gs", "s3")


def checkpoint_location(directory: str, name: str = "checkpoint folder") -> str:
  """Where orbax keeps checkpoints for `directory`: a local folder made absolute (also
  for a `file://` URL, which names a local folder), or a gs:// or s3:// URL as given.

  Raises ValueError, naming `name` and `directory`, for any other scheme.
  """
  local = fs.local_path(directory)
  if local is not None:
    return fs.resolve(local)
  if fs.scheme(directory) in CHECKPOINT_SCHEMES:
    return directory
  schemes = ", ".join(f"{s}://" for s in CHECKPOINT_SCHEMES)
  raise ValueError(f"{name} {directory}: checkpoints cannot be written under "
                   f"{fs.scheme(directory)}://; orbax writes them to a local folder, a "
                   f"file:// URL, or {schemes}; choose one of those")


def _describe(path) -> str:
  def name(k):
    for attribute in ("key", "name", "idx"):
      if hasattr(k, attribute):
        return str(getattr(k, attribute))
    return str(k)
  return "/".join(name(k) for k in path)


def check_compatible(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
  """Raises when the model config or vocabulary recorded with a checkpoint differs."""
  problems = []
  for section in ("model_config", "vocabulary"):
    have, want = saved.get(section), expected.get(section)
    if have is None or want is None:
      continue
    for key in sorted(set(have) | set(want)):
      if key in _IGNORED_CONFIG_KEYS:
        continue
      if have.get(key) != want.get(key):
        problems.append(f"{section}.{key}: checkpoint has {have.get(key)!r}, this run "
                        f"expects {want.get(key)!r}")
  if problems:
    raise ValueError(f"checkpoint {where} does not match this run's model:\n  "
                     + "\n  ".join(problems))


# Settings that change how a model runs, not what its parameters mean.
# (LoRA settings other than the rank only matter once adapters exist; the shape check
# catches adapters that do not fit.)
_IGNORED_CONFIG_KEYS = {"dtype", "scan_layers", "remat_policy", "max_seq_len", "lora_alpha",
                        "lora_targets", "extra_eos_ids", "attention_block",
                        "attention_impl"}


# Field metadata of a config field added after records of its config existed: the record
# of the config leaves the field out while it has its default, so those records still match.
RECORD_IF_SET = "align_jax_record_if_set"


def config_record(config: Any) -> dict[str, Any]:
  """A JSON-able record of a dataclass config. A field of the config whose metadata sets
  `RECORD_IF_SET` is left out while it holds its default."""
  def plain(v):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
      record = dataclasses.asdict(v)
      for f in dataclasses.fields(v):
        if f.metadata.get(RECORD_IF_SET) and getattr(v, f.name) == f.default:
          del record[f.name]
      return {k: plain(x) for k, x in record.items()}
    if isinstance(v, tuple):
      return [plain(x) for x in v]
    return v
  return plain(config)


class Checkpointer:
  """orbax CheckpointManager for one run directory (WORKDIR/checkpoints)."""

  def __init__(self, directory: str, *, keep: int = 3, save_every: int = 100,
               async_save: bool = True):
    self.directory = checkpoint_location(directory)
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "record": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, record: Mapping[str, Any], force: bool = False) -> bool:
    if step in self._manager.all_steps():
      return False  # already saved (e.g. the final step coincides with a periodic save)
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record))),
        force=force)

  def read_record(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
    return dict(restored["record"])

  def restore(self, step: int, abstract_state: Any, expected: Mapping[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores `step` into the shapes/shardings of `abstract_state` (ShapeDtypeStructs)."""
    where = fs.join(self.directory, str(step))
    record = self.read_record(step)
    if expected is not None:
      check_compatible(record, expected, where)
    metadata = self._manager.item_metadata(step)
    stored = metadata["state"] if metadata is not None and "state" in metadata else None
    if stored is not None:
      self._check_shapes(stored, abstract_state, where)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["record"])

  @staticmethod
  def _check_shapes(stored: Any, abstract_state: Any, where: str) -> None:
    want = {_describe(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_leaves_with_path(abstract_state)}
    have = {}
    for p, x in jax.tree_util.tree_leaves_with_path(stored):
      if hasattr(x, "shape"):
        have[_describe(p)] = tuple(x.shape)
    order = lambda k: (not k.startswith("params"), k)  # parameters first, then optimizer
    missing = sorted(set(want) - set(have), key=order)
    extra = sorted(set(have) - set(want), key=order)
    wrong = sorted((k for k in set(want) & set(have) if want[k] != have[k]), key=order)
    if missing or extra or wrong:
      lines = [f"{k}: checkpoint {have[k]}, model {want[k]}" for k in wrong[:8]]
      if len(wrong) > 8:
        lines.append(f"... and {len(wrong) - 8} more arrays of other shapes")
      lines += [f"{k}: missing from the checkpoint" for k in missing[:8]]
      lines += [f"{k}: in the checkpoint but not in the model" for k in extra[:8]]
      raise ValueError(f"checkpoint {where} does not fit this run's state:\n  "
                       + "\n  ".join(lines))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(directory: str, abstract_params: Any, expected: Mapping[str, Any] | None = None,
                   step: int | None = None) -> tuple[Any, dict[str, Any]]:
  """The parameters stored by another run (e.g. the pretraining stage), without its
  optimizer state. `directory` is that run's checkpoint folder."""
  checkpointer = Checkpointer(directory, async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{directory}: no checkpoint found")
    record = checkpointer.read_record(step)
    where = fs.join(checkpointer.directory, str(step))
    if expected is not None:
      check_compatible(record, expected, where)
    metadata = checkpointer._manager.item_metadata(step)  # noqa: SLF001
    Checkpointer._check_shapes(metadata["state"]["params"], abstract_params, where)
    # Read only the parameters of the stored state, each into its target sharding.
    target = {"params": abstract_params}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(
        sharding=x.sharding, global_shape=x.shape, dtype=x.dtype), target)
    with ocp.PyTreeCheckpointer() as reader:
      restored = reader.restore(fs.join(where, "state"), args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    return restored["params"], record
  finally:
    checkpointer.close()

