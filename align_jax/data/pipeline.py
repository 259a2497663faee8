"""Training batches from tokenized examples: shift, truncate, pack and pad.

Every batch is a dict of numpy arrays of shape [rows, seq_len]:

  input_tokens   int32    s[:-1] of each sequence s
  target_tokens  int32    s[1:]
  loss_weights   float32  m[1:], where m[i] = 1 if s[i] is trained on
                          (every target for kind 'lm'; the assistant
                          tokens for 'sft')
  positions      int32    0, 1, ... within each sequence
  segment_ids    int32    1, 2, ... for the sequences of a row; 0 = padding

Padding is 0 in every feature. With packing, sequences are placed greedily,
in order, into the current row until the next one does not fit; it then
starts a new row (a row never holds a piece of a sequence). Without packing
every row holds one sequence.

Kind 'process' gives the five features above with `loss_weights` 1 where a
label applies, plus `labels` float32 (the 0/1 label there), one sequence per
row (never packed). Kind 'preference' gives `chosen_<feature>` and `rejected_<feature>` for the
five features above, one pair per row (never packed). Kind 'prompt' gives
`prompt_tokens` int32 [rows, seq_len], left-padded with 0, and
`prompt_lengths` int32 [rows]; there is no shift.

A sequence fits a row when it has at most seq_len + 1 tokens (seq_len for
prompts). Longer ones follow `truncate`: 'right' keeps the first tokens,
'left' the last ones, 'drop' skips the sequence (for preference, the pair is
dropped if either side is too long). Sequences with fewer than 2 tokens
(fewer than 1 for prompts) have nothing to train on and are skipped.
MAX_CONSECUTIVE_SKIPS skipped sequences in a row raise ValueError (so an
endless stream of unusable sequences cannot spin forever).

`BatchIterator.stats` counts, over all batches yielded so far:
  sequences      sequences placed in rows (pairs for preference)
  truncated      of those, how many were cut (pairs with a cut side)
  dropped        sequences (pairs) skipped by truncate='drop'
  too_short      sequences (pairs) skipped for being too short
  tokens         non-padding positions (both sides for preference)
  target_tokens  positions with a nonzero loss weight
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio

from align_jax.data.tasks import FEATURES, KINDS

TRUNCATE_POLICIES = ("right", "left", "drop")

BATCH_FEATURES = (
    "input_tokens",
    "target_tokens",
    "loss_weights",
    "positions",
    "segment_ids",
)

STATS_KEYS = (
    "sequences",
    "truncated",
    "dropped",
    "too_short",
    "tokens",
    "target_tokens",
)

# A stream that repeats forever could skip sequences forever (e.g. all of
# them too long under truncate='drop'); this many skips in a row is an error.
MAX_CONSECUTIVE_SKIPS = 10_000

Example = Mapping[str, Any]
Batch = dict[str, np.ndarray]


def _empty_row(seq_len: int) -> Batch:
  return {
      "input_tokens": np.zeros([seq_len], np.int32),
      "target_tokens": np.zeros([seq_len], np.int32),
      "loss_weights": np.zeros([seq_len], np.float32),
      "positions": np.zeros([seq_len], np.int32),
      "segment_ids": np.zeros([seq_len], np.int32),
  }


def _place(row: Batch, offset: int, segment: int, ids: np.ndarray,
           mask: np.ndarray) -> int:
  """Writes one shifted sequence into `row` at `offset`; returns its length."""
  n = len(ids) - 1
  end = offset + n
  row["input_tokens"][offset:end] = ids[:-1]
  row["target_tokens"][offset:end] = ids[1:]
  row["loss_weights"][offset:end] = mask[1:]
  row["positions"][offset:end] = np.arange(n, dtype=np.int32)
  row["segment_ids"][offset:end] = segment
  return n


def _truncate(ids: np.ndarray, mask: np.ndarray, limit: int,
              policy: str) -> tuple[np.ndarray, np.ndarray] | None:
  """Cuts a sequence to `limit` tokens, or None if the policy drops it."""
  if len(ids) <= limit:
    return ids, mask
  if policy == "drop":
    return None
  if policy == "right":
    return ids[:limit], mask[:limit]
  return ids[-limit:], mask[-limit:]


@dataclasses.dataclass
class _Row:
  """A row being built, with the counts it brings to `stats` when yielded."""

  features: Batch
  used: int = 0
  segments: int = 0
  counts: dict[str, int] = dataclasses.field(
      default_factory=lambda: dict.fromkeys(STATS_KEYS, 0))


def _as_arrays(example: Example, kind: str) -> dict[str, np.ndarray]:
  missing = [name for name in FEATURES[kind] if name not in example]
  if missing:
    raise ValueError(
        f"Examples of kind {kind!r} need the features {FEATURES[kind]}; "
        f"missing {missing} (got {sorted(example)})."
    )
  return {name: np.asarray(example[name]).reshape(-1)
          for name in FEATURES[kind]}


class _Batcher:
  """Turns a stream of tokenized examples into batches (see module doc)."""

  def __init__(self, kind: str, rows: int, seq_len: int, pack: bool,
               truncate: str):
    self.kind = kind
    self.rows = rows
    self.seq_len = seq_len
    self.pack = pack and kind in ("lm", "sft")
    self.truncate = truncate

  def __call__(
      self, examples: Iterable[Example]
  ) -> Iterator[tuple[Batch | None, dict[str, int]]]:
    """Yields (batch, the stats counts it adds); batch None: counts only."""
    done: list[_Row] = []
    current: _Row | None = None
    pending = dict.fromkeys(STATS_KEYS, 0)  # Skips not yet tied to a row.

    skipped = 0
    for example in examples:
      row = self._make_row(_as_arrays(example, self.kind), pending, current)
      if row is None:
        skipped += 1
        if skipped >= MAX_CONSECUTIVE_SKIPS:
          raise ValueError(
              f"{skipped} sequences in a row were skipped ({pending}); "
              f"seq_len={self.seq_len} with truncate={self.truncate!r} "
              "leaves nothing to train on."
          )
        continue
      skipped = 0
      for key in pending:
        row.counts[key] += pending[key]
        pending[key] = 0
      if row is not current:
        if current is not None:
          done.append(current)
        current = row
      if not self.pack:
        done.append(current)
        current = None
      while len(done) >= self.rows:
        yield self._stack(done[:self.rows])
        done = done[self.rows:]

    if current is not None:
      done.append(current)
    if not done:
      # Skips after the last batch still count once the stream has ended.
      if any(pending.values()):
        yield None, pending
      return
    for key in pending:
      done[-1].counts[key] += pending[key]
    while done:
      chunk = done[:self.rows]
      done = done[self.rows:]
      chunk += [_Row(self._empty()) for _ in range(self.rows - len(chunk))]
      yield self._stack(chunk)

  def _empty(self) -> Batch:
    if self.kind == "preference":
      return {f"{side}_{k}": v for side in ("chosen", "rejected")
              for k, v in _empty_row(self.seq_len).items()}
    if self.kind == "prompt":
      return {"prompt_tokens": np.zeros([self.seq_len], np.int32),
              "prompt_lengths": np.zeros([], np.int32)}
    if self.kind == "process":
      return {**_empty_row(self.seq_len), "labels": np.zeros([self.seq_len], np.float32)}
    return _empty_row(self.seq_len)

  def _make_row(self, arrays: dict[str, np.ndarray], pending: dict[str, int],
                current: _Row | None) -> _Row | None:
    """Adds one example: to `current` if it fits, else to a new row.

    Returns the row that received it, or None if it was skipped (counted in
    `pending`).
    """
    if self.kind == "prompt":
      return self._prompt_row(arrays["prompt_tokens"], pending)
    if self.kind == "preference":
      return self._preference_row(arrays, pending)

    ids = arrays["tokens"]
    if self.kind == "lm":
      mask = np.ones_like(ids)
    elif self.kind == "process":
      mask = arrays["label_values"]  # -1: no label; 0/1 labels (made a mask below)
    else:
      mask = arrays["loss_mask"]
    cut = self._fit(ids, mask, pending)
    if cut is None:
      return None
    truncated = len(cut[0]) < len(ids)
    ids, mask = cut
    n = len(ids) - 1
    row = current
    if row is None or row.used + n > self.seq_len:
      row = _Row(self._empty())
    row.segments += 1
    if self.kind == "process":
      row.features["labels"][row.used:row.used + n] = np.maximum(mask[1:], 0)
      mask = (mask >= 0).astype(np.int32)
    _place(row.features, row.used, row.segments, ids, mask)
    row.used += n
    row.counts["sequences"] += 1
    row.counts["truncated"] += int(truncated)
    row.counts["tokens"] += n
    row.counts["target_tokens"] += int(np.count_nonzero(mask[1:]))
    return row

  def _fit(self, ids: np.ndarray, mask: np.ndarray, pending: dict[str, int]
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """The sequence cut to a row (by the truncation policy), or None when it is skipped
    (too short to have a target, or dropped); skips are counted in `pending`."""
    if len(ids) < 2:
      pending["too_short"] += 1
      return None
    cut = _truncate(ids, mask, self.seq_len + 1, self.truncate)
    if cut is None:
      pending["dropped"] += 1
    return cut

  def _preference_row(self, arrays: dict[str, np.ndarray],
                      pending: dict[str, int]) -> _Row | None:
    sides = {}
    truncated = False
    for side in ("chosen", "rejected"):
      ids = arrays[f"{side}_tokens"]
      mask = arrays[f"{side}_loss_mask"]
      cut = self._fit(ids, mask, pending)
      if cut is None:
        return None
      truncated |= len(cut[0]) < len(ids)
      sides[side] = cut
    row = _Row(self._empty())
    for side, (ids, mask) in sides.items():
      single = _empty_row(self.seq_len)
      row.counts["tokens"] += _place(single, 0, 1, ids, mask)
      row.counts["target_tokens"] += int(np.count_nonzero(mask[1:]))
      for key, value in single.items():
        row.features[f"{side}_{key}"] = value
    row.counts["sequences"] += 1
    row.counts["truncated"] += int(truncated)
    return row

  def _prompt_row(self, ids: np.ndarray, pending: dict[str, int]) -> _Row | None:
    if len(ids) < 1:
      pending["too_short"] += 1
      return None
    cut = _truncate(ids, ids, self.seq_len, self.truncate)
    if cut is None:
      pending["dropped"] += 1
      return None
    row = _Row(self._empty())
    kept = cut[0]
    row.features["prompt_tokens"][self.seq_len - len(kept):] = kept
    row.features["prompt_lengths"] = np.asarray(len(kept), np.int32)
    row.counts["sequences"] += 1
    row.counts["truncated"] += int(len(kept) < len(ids))
    row.counts["tokens"] += len(kept)
    return row

  def _stack(self, rows: Sequence[_Row]) -> tuple[Batch, dict[str, int]]:
    batch = {key: np.stack([row.features[key] for row in rows])
             for key in rows[0].features}
    counts = dict.fromkeys(STATS_KEYS, 0)
    for row in rows:
      for key, value in row.counts.items():
        counts[key] += value
    return batch, counts


def pack_examples(
    examples: Iterable[Example],
    *,
    kind: str,
    batch_size: int,
    seq_len: int,
    pack: bool = True,
    truncate: str = "right",
    stats: dict[str, int] | None = None,
) -> Iterator[Batch]:
  """Yields batches of `batch_size` rows from tokenized examples, in order.

  The last batch is filled up with padding rows. If `stats` is given, the
  counts of every yielded batch are added to it.
  """
  _check_args(kind, batch_size, seq_len, truncate)
  batcher = _Batcher(kind, batch_size, seq_len, pack, truncate)
  for batch, counts in batcher(examples):
    if stats is not None:
      for key, value in counts.items():
        stats[key] = stats.get(key, 0) + value
    if batch is not None:
      yield batch


def _check_args(kind: str, batch_size: int, seq_len: int, truncate: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"Unknown kind {kind!r}; expected one of {KINDS}.")
  if truncate not in TRUNCATE_POLICIES:
    raise ValueError(
        f"Unknown truncate policy {truncate!r}; expected one of "
        f"{TRUNCATE_POLICIES}.")
  if batch_size < 1 or seq_len < 1:
    raise ValueError(
        f"batch_size and seq_len must be positive, got {batch_size} and "
        f"{seq_len}.")


def list_stream(examples: Sequence[Example], shard_info: seqio.ShardInfo,
                 shuffle: bool, seed: int,
                 num_epochs: int | None) -> Iterator[Example]:
  """This host's examples, reshuffled every epoch with (seed, epoch)."""
  shard = list(examples)[shard_info.index::shard_info.num_shards]
  if not shard:
    raise ValueError(
        f"No examples for shard {shard_info.index} of "
        f"{shard_info.num_shards} ({len(examples)} examples in all).")

  def stream() -> Iterator[Example]:
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
      if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(shard))
      else:
        order = range(len(shard))
      for index in order:
        yield shard[index]
      epoch += 1

  return stream()


class BatchIterator:
  """Deterministic, resumable batches of a seqio task or of example dicts.

  `source` is a registered task or mixture name, a `seqio.Task` /
  `seqio.Mixture`, or a list of tokenized examples (dicts holding the
  features `tasks.FEATURES[kind]`; 'lm' needs only 'tokens').

  `batch_size` is the global batch size: each host reads its own shard
  (`seqio.ShardInfo(jax.process_index(), jax.process_count())` unless
  `shard_info` is given) and yields batch_size // num_shards rows, so
  batch_size must divide evenly. Examples are shuffled with `seed` (seqio's
  shuffle buffer for tasks, a full per-epoch permutation for lists) and
  repeated `num_epochs` times (None: forever). A finite stream ends with a
  batch filled up with padding rows. A stream without any batch (empty
  data, or every sequence skipped) raises ValueError on the first `next`.

  `position` counts the batches yielded so far. A new iterator built with
  the same arguments and `start_position=N` regenerates and discards the
  first N batches, then continues exactly like an uninterrupted run;
  `stats` (see the module docstring) include the discarded batches.
  """

  def __init__(
      self,
      source: str | seqio.Task | seqio.Mixture | Sequence[Example],
      *,
      kind: str,
      batch_size: int,
      seq_len: int,
      split: str = "train",
      seed: int = 0,
      pack: bool = True,
      truncate: str = "right",
      num_epochs: int | None = None,
      start_position: int = 0,
      shuffle: bool = True,
      shuffle_buffer_size: int = 10_000,
      shard_info: seqio.ShardInfo | None = None,
  ):
    _check_args(kind, batch_size, seq_len, truncate)
    if shard_info is None:
      shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count())
    if batch_size % shard_info.num_shards:
      raise ValueError(
          f"batch_size {batch_size} is not divisible by the number of hosts "
          f"{shard_info.num_shards}.")
    if start_position < 0:
      raise ValueError(f"start_position must be >= 0, got {start_position}.")
    self.kind = kind
    self.batch_size = batch_size
    self.rows = batch_size // shard_info.num_shards
    self.seq_len = seq_len
    self.shard_info = shard_info
    self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)
    self.position = 0

    if isinstance(source, str):
      source = seqio.get_mixture_or_task(source)
    if isinstance(source, (seqio.Task, seqio.Mixture)):
      self._description = (
          f"{type(source).__name__} {source.name!r}, split {split!r}, shard "
          f"{shard_info.index} of {shard_info.num_shards}"
      )
    else:
      self._description = f"A list of {len(source)} examples"
    if isinstance(source, (seqio.Task, seqio.Mixture)):
      kwargs: dict[str, Any] = {}
      if isinstance(source, seqio.Task):
        kwargs["shuffle_buffer_size"] = shuffle_buffer_size
      ds = source.get_dataset(
          sequence_length=None,
          split=split,
          shuffle=shuffle,
          seed=seed,
          # One host reads everything; no need to ask the source for shards.
          shard_info=shard_info if shard_info.num_shards > 1 else None,
          num_epochs=num_epochs,
          try_in_mem_cache=False,
          **kwargs,
      )
      examples: Iterable[Example] = ds.as_numpy_iterator()
    else:
      examples = list_stream(source, shard_info, shuffle, seed, num_epochs)

    self._batches = pack_examples(
        examples, kind=kind, batch_size=self.rows, seq_len=seq_len, pack=pack,
        truncate=truncate, stats=self.stats)
    for _ in range(start_position):
      if next(self, None) is None:
        break

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> Batch:
    try:
      batch = next(self._batches)
    except StopIteration:
      if self.position == 0:
        raise ValueError(
            f"{self._description} produced no batches (stats: {self.stats}); "
            "the data is empty, or every sequence was skipped."
        ) from None
      raise
    self.position += 1
    return batch


def make_batch_iterator(
    task_name: str,
    split: str,
    *,
    batch_size: int,
    seq_len: int,
    kind: str,
    seed: int,
    pack: bool = True,
    truncate: str = "right",
    num_epochs: int | None = None,
    start_position: int = 0,
) -> BatchIterator:
  """A `BatchIterator` over the registered seqio task (or mixture) `task_name`."""
  return BatchIterator(
      task_name,
      kind=kind,
      batch_size=batch_size,
      seq_len=seq_len,
      split=split,
      seed=seed,
      pack=pack,
      truncate=truncate,
      num_epochs=num_epochs,
      start_position=start_position,
  )
