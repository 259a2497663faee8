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

With `pad_to_multiple_of` (kinds other than 'prompt'), a batch is cut short after
its longest row: its length axis becomes the smallest multiple of that number
(at most seq_len) holding every row's tokens, so short rows are not padded to
seq_len (the padding that is cut is nothing but zeros; on several hosts, the
hosts agree on the longest). Each length compiles the training step once.

A sequence fits a row when it has at most seq_len + 1 tokens (seq_len for
prompts). Longer ones follow `truncate` (None: `DEFAULT_TRUNCATE[kind]`):

  'split'          kind 'lm' only: the document becomes consecutive chunks of
                   seq_len + 1 tokens (the last one shorter), each a sequence of
                   its own (packed like any other). Consecutive chunks share one
                   token, the last of a chunk being the first of the next, so
                   every token of the document but the first is a target exactly
                   once: the chunks' targets, concatenated, are tokens[1:].
  'keep_response'  trims the prompt (the tokens before the first trained
                   target) from the left, down to the one token the first target
                   needs as its input, then cuts the tail: the trained tokens are
                   all kept when they fit. Both sides of a preference pair lose
                   the same prompt tokens. For 'lm' this is 'right', for prompts
                   'left'.
  'right'          keeps the first tokens; 'left' keeps the last ones.
  'drop'           skips the sequence (for preference, the pair is dropped if
                   either side is too long).

A cut that would leave a sequence none of the trained targets it had (e.g.
'right' on an SFT row whose prompt fills the row) skips it instead (for
preference, the pair), counted as dropped. Sequences with fewer than 2 tokens
(fewer than 1 for prompts) have nothing to train on and are skipped.
MAX_CONSECUTIVE_SKIPS skipped sequences in a row raise ValueError (so an
endless stream of unusable sequences cannot spin forever).

`BatchIterator.stats` counts, over all batches yielded so far:
  sequences        sequences placed in rows (pairs for preference; each chunk
                   of a split document counts)
  split_documents  documents split into chunks by truncate='split'
  chunks           the chunks they became
  truncated        placed sequences that were cut (pairs with a cut side)
  cut_targets      of those, how many lost trained targets (the others lost
                   prompt tokens only)
  dropped          sequences (pairs) skipped by truncate='drop', or because a
                   cut would leave them none of their trained targets
  too_short        sequences (pairs) skipped for being too short
  tokens           non-padding positions (both sides for preference)
  target_tokens    positions with a nonzero loss weight

`data_summary` counts them over one pass of a split, and `describe_stats`
puts them in one line for the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio

from align_jax.data.tasks import FEATURES, KINDS

TRUNCATE_POLICIES = ("split", "keep_response", "right", "left", "drop")

# The policy each kind gets when `truncate` is None. Long documents are split;
# chat kinds keep the first tokens as they always have ('keep_response' is
# the policy that keeps their responses).
DEFAULT_TRUNCATE: Mapping[str, str] = {
    "lm": "split",
    "sft": "right",
    "preference": "right",
    "process": "right",
    "prompt": "right",
}

BATCH_FEATURES = (
    "input_tokens",
    "target_tokens",
    "loss_weights",
    "positions",
    "segment_ids",
)

STATS_KEYS = (
    "sequences",
    "split_documents",
    "chunks",
    "truncated",
    "cut_targets",
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


def _first_target(trained: np.ndarray) -> int:
  """The index of the first trained target (never 0), or len(trained) if none."""
  hits = np.flatnonzero(trained[1:])
  return int(hits[0]) + 1 if len(hits) else len(trained)


def _prompt_trim(length: int, first: int, limit: int) -> int:
  """How many leading tokens 'keep_response' removes to fit `limit` tokens."""
  return max(0, min(length - limit, first - 1))


def _window(length: int, first: int, limit: int, policy: str, trim: int) -> slice:
  """The part a cutting policy keeps of a sequence of `length` tokens."""
  if policy == "right":
    return slice(0, limit)
  if policy == "left":
    return slice(length - limit, length)
  start = min(trim, first - 1)  # 'keep_response'
  return slice(start, min(length, start + limit))


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
      rows = self._make_rows(_as_arrays(example, self.kind), pending, current)
      if not rows:
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
        rows[0].counts[key] += pending[key]
        pending[key] = 0
      for row in rows:
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

  def _make_rows(self, arrays: dict[str, np.ndarray], pending: dict[str, int],
                 current: _Row | None) -> list[_Row]:
    """Adds one example: to `current` if it fits, else to new rows (several for a
    split document).

    Returns the rows that received it, in order; none if it was skipped (counted in
    `pending`).
    """
    if self.kind == "prompt":
      return self._prompt_row(arrays["prompt_tokens"], pending)
    if self.kind == "preference":
      return self._preference_row(arrays, pending)

    ids = arrays["tokens"]
    labels = None
    if self.kind == "lm":
      weights = np.ones_like(ids)
    elif self.kind == "process":
      labels = arrays["label_values"]  # -1: no label; 0/1 labels.
      weights = (labels >= 0).astype(np.int32)
    else:
      weights = arrays["loss_mask"]
    limit = self.seq_len + 1
    if self.truncate == "split" and len(ids) > limit:
      pieces = [slice(start, start + limit) for start in range(0, len(ids) - 1, self.seq_len)]
    else:
      piece = self._cut(ids, weights != 0, pending, limit)
      if piece is None:
        return []
      pieces = [piece]
    rows = []
    for piece in pieces:
      current = self._place_sequence(ids[piece], weights[piece],
                                     None if labels is None else labels[piece], current)
      rows.append(current)
      if len(pieces) > 1:
        current.counts["chunks"] += 1
    if len(pieces) > 1:
      rows[0].counts["split_documents"] += 1
    else:
      self._count_cut(rows[0].counts, weights != 0, pieces[0])
    return rows

  def _place_sequence(self, ids: np.ndarray, weights: np.ndarray, labels: np.ndarray | None,
                      current: _Row | None) -> _Row:
    """Writes one sequence into `current` if it fits, else into a new row; returns that row."""
    n = len(ids) - 1
    row = current
    if row is None or not self.pack or row.used + n > self.seq_len:
      row = _Row(self._empty())
    row.segments += 1
    if labels is not None:
      row.features["labels"][row.used:row.used + n] = np.maximum(labels[1:], 0)
    _place(row.features, row.used, row.segments, ids, weights)
    row.used += n
    row.counts["sequences"] += 1
    row.counts["tokens"] += n
    row.counts["target_tokens"] += int(np.count_nonzero(weights[1:]))
    return row

  def _cut(self, ids: np.ndarray, trained: np.ndarray, pending: dict[str, int], limit: int,
           *, trim: int = 0, min_length: int = 2) -> slice | None:
    """The part of a sequence that goes into a row (see the module docstring), or None
    when it is skipped: too short, dropped by the policy, or left without the trained
    targets it had. Skips are counted in `pending`.

    `trim`: the prompt tokens 'keep_response' removes even when the sequence fits (the
    shorter side of a preference pair).
    """
    length = len(ids)
    if length < min_length:
      pending["too_short"] += 1
      return None
    if length <= limit and not trim:
      return slice(0, length)
    if self.truncate == "drop":
      pending["dropped"] += 1
      return None
    first = _first_target(trained)
    if self.truncate == "keep_response" and not trim:
      trim = _prompt_trim(length, first, limit)
    piece = _window(length, first, limit, self.truncate, trim)
    if trained[1:].any() and not trained[piece][1:].any():
      pending["dropped"] += 1
      return None
    return piece

  @staticmethod
  def _count_cut(counts: dict[str, int], trained: np.ndarray, piece: slice) -> None:
    """Adds one to `truncated` (and `cut_targets`) when `piece` is less than the sequence."""
    if piece.start == 0 and piece.stop >= len(trained):
      return
    counts["truncated"] += 1
    kept = int(np.count_nonzero(trained[piece][1:]))
    counts["cut_targets"] += int(kept < int(np.count_nonzero(trained[1:])))

  def _preference_row(self, arrays: dict[str, np.ndarray],
                      pending: dict[str, int]) -> list[_Row]:
    limit = self.seq_len + 1
    sides = {side: (arrays[f"{side}_tokens"], arrays[f"{side}_loss_mask"])
             for side in ("chosen", "rejected")}
    trim = 0
    if self.truncate == "keep_response":  # Both sides keep the same prompt tokens.
      trim = max(_prompt_trim(len(ids), _first_target(mask != 0), limit)
                 for ids, mask in sides.values())
    pieces = {}
    for side, (ids, mask) in sides.items():
      piece = self._cut(ids, mask != 0, pending, limit, trim=trim)
      if piece is None:
        return []
      pieces[side] = piece
    row = _Row(self._empty())
    side_counts = dict.fromkeys(("truncated", "cut_targets"), 0)
    for side, (ids, mask) in sides.items():
      piece = pieces[side]
      single = _empty_row(self.seq_len)
      row.counts["tokens"] += _place(single, 0, 1, ids[piece], mask[piece])
      row.counts["target_tokens"] += int(np.count_nonzero(mask[piece][1:]))
      self._count_cut(side_counts, mask != 0, piece)
      for key, value in single.items():
        row.features[f"{side}_{key}"] = value
    row.counts["sequences"] += 1
    for key, value in side_counts.items():
      row.counts[key] += int(value > 0)
    return [row]

  def _prompt_row(self, ids: np.ndarray, pending: dict[str, int]) -> list[_Row]:
    piece = self._cut(ids, np.zeros(len(ids), bool), pending, self.seq_len, min_length=1)
    if piece is None:
      return []
    row = _Row(self._empty())
    kept = ids[piece]
    row.features["prompt_tokens"][self.seq_len - len(kept):] = kept
    row.features["prompt_lengths"] = np.asarray(len(kept), np.int32)
    row.counts["sequences"] += 1
    row.counts["truncated"] += int(len(kept) < len(ids))
    row.counts["tokens"] += len(kept)
    return [row]

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
    truncate: str | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[Batch]:
  """Yields batches of `batch_size` rows from tokenized examples, in order.

  The last batch is filled up with padding rows. If `stats` is given, the
  counts of every yielded batch are added to it.
  """
  truncate = _check_args(kind, batch_size, seq_len, truncate)
  batcher = _Batcher(kind, batch_size, seq_len, pack, truncate)
  for batch, counts in batcher(examples):
    if stats is not None:
      for key, value in counts.items():
        stats[key] = stats.get(key, 0) + value
    if batch is not None:
      yield batch


def _check_args(kind: str, batch_size: int, seq_len: int, truncate: str | None) -> str:
  """The truncation policy (the kind's default for None), once the arguments are valid."""
  if kind not in KINDS:
    raise ValueError(f"Unknown kind {kind!r}; expected one of {KINDS}.")
  if truncate is None:
    truncate = DEFAULT_TRUNCATE[kind]
  if truncate not in TRUNCATE_POLICIES:
    raise ValueError(
        f"Unknown truncate policy {truncate!r}; expected one of "
        f"{TRUNCATE_POLICIES}.")
  if truncate == "split" and kind != "lm":
    raise ValueError(
        f"truncate='split' splits documents (kind 'lm'), not kind {kind!r}; "
        "'keep_response' keeps the trained tokens of a long row.")
  if batch_size < 1 or seq_len < 1:
    raise ValueError(
        f"batch_size and seq_len must be positive, got {batch_size} and "
        f"{seq_len}.")
  return truncate


def batch_length(batch: Mapping[str, np.ndarray], multiple: int, seq_len: int) -> int:
  """The length `trim_batch` cuts a batch to: the smallest multiple of `multiple`
  (at most `seq_len`, at least `min(multiple, seq_len)`) that holds every row's tokens,
  read from its segment ids (0: padding, which ends every row)."""
  used = 0
  for key, value in batch.items():
    if key.endswith("segment_ids"):
      columns = np.flatnonzero(np.asarray(value).any(axis=0))
      used = max(used, int(columns[-1]) + 1 if len(columns) else 0)
  return min(seq_len, max(1, -(-used // multiple)) * multiple)


def trim_batch(batch: Batch, length: int, seq_len: int) -> Batch:
  """`batch` with every [rows, seq_len] feature cut to its first `length` positions
  (`batch_length`: those cut hold only padding)."""
  return {k: v[:, :length] if v.ndim == 2 and v.shape[1] == seq_len else v
          for k, v in batch.items()}


def _agreed_length(length: int) -> int:
  """The largest of the hosts' lengths (every host calls this for each batch)."""
  if jax.process_count() == 1:
    return length
  from jax.experimental import multihost_utils
  return int(np.max(multihost_utils.process_allgather(np.asarray(length, np.int32))))


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


def without_autotune(ds):
  """`ds` with tf.data's autotuning off. Autotuning runs a model thread beside the
  pipeline that competes with XLA for the CPU, and deleting an iterator waits for it:
  up to a minute after a long training run on a 2-core machine (the iterator's
  destructor blocked in the thread's wrapper). These pipelines only read and shuffle
  tokenized examples (batches are assembled in Python), so there is nothing to tune."""
  import tensorflow as tf
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def _joined(streams: Sequence[Iterator[Batch]]) -> Iterator[Batch]:
  """Batches of several shards' streams, their rows one after the other; a stream that
  ended sooner than the others adds padding rows until all have ended."""
  template: Batch | None = None
  while True:
    parts = [next(stream, None) for stream in streams]
    if all(p is None for p in parts):
      return
    template = template or next(p for p in parts if p is not None)
    yield {k: np.concatenate([p[k] if p is not None else np.zeros_like(template[k])
                              for p in parts]) for k in template}


class BatchIterator:
  """Deterministic, resumable batches of a seqio task or of example dicts.

  `source` is a registered task or mixture name, a `seqio.Task` /
  `seqio.Mixture`, or a list of tokenized examples (dicts holding the
  features `tasks.FEATURES[kind]`; 'lm' needs only 'tokens').

  `batch_size` is the global batch size: each host reads its own shard
  (`seqio.ShardInfo(jax.process_index(), jax.process_count())` unless
  `shard_info` is given) and yields batch_size // num_shards rows, so
  batch_size must divide evenly. With `data_shards` the data has that many
  shards whatever the number of hosts (a multiple of it): each host reads its
  consecutive share of them, each shard filling batch_size // data_shards rows
  of every batch in shard order, so the global batches (and a run) are the same
  on any number of hosts that divides `data_shards`. Examples are shuffled with `seed` (seqio's
  shuffle buffer for tasks, a full per-epoch permutation for lists) and
  repeated `num_epochs` times (None: forever). A finite stream ends with a
  batch filled up with padding rows. A stream without any batch (empty
  data, or every sequence skipped) raises ValueError on the first `next`.
  Sequences longer than a row follow `truncate` (see the module docstring;
  None: `DEFAULT_TRUNCATE[kind]`, kept in `self.truncate`). With
  `pad_to_multiple_of`, each batch is cut after its longest row (see the module
  docstring): rows are then at most seq_len long rather than exactly, and on
  several hosts every host must read its next batch together (as training does).

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
      truncate: str | None = None,
      num_epochs: int | None = None,
      start_position: int = 0,
      shuffle: bool = True,
      shuffle_buffer_size: int = 10_000,
      shard_info: seqio.ShardInfo | None = None,
      data_shards: int | None = None,
      pad_to_multiple_of: int | None = None,
  ):
    truncate = _check_args(kind, batch_size, seq_len, truncate)
    if pad_to_multiple_of is not None:
      if kind == "prompt":
        raise ValueError("pad_to_multiple_of cuts the right-hand padding of a batch; "
                         "kind 'prompt' is padded on the left")
      if pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    if shard_info is None:
      shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count())
    if batch_size % shard_info.num_shards:
      raise ValueError(
          f"batch_size {batch_size} is not divisible by the number of hosts "
          f"{shard_info.num_shards}.")
    if data_shards is not None and (data_shards < 1 or data_shards % shard_info.num_shards
                                    or batch_size % data_shards):
      raise ValueError(
          f"data_shards {data_shards} must be a multiple of the number of hosts "
          f"{shard_info.num_shards} and divide batch_size {batch_size}.")
    if start_position < 0:
      raise ValueError(f"start_position must be >= 0, got {start_position}.")
    self.kind = kind
    self.batch_size = batch_size
    self.rows = batch_size // shard_info.num_shards
    self.seq_len = seq_len
    self.truncate = truncate
    self.shard_info = shard_info
    self.pad_to_multiple_of = pad_to_multiple_of
    self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)
    self.position = 0

    if isinstance(source, str):
      source = seqio.get_mixture_or_task(source)
    if data_shards is None:
      shards = [shard_info]
    else:
      share = data_shards // shard_info.num_shards
      shards = [seqio.ShardInfo(j, data_shards)
                for j in range(shard_info.index * share, (shard_info.index + 1) * share)]
    shard_names = ", ".join(str(s.index) for s in shards)
    if isinstance(source, (seqio.Task, seqio.Mixture)):
      self._description = (
          f"{type(source).__name__} {source.name!r}, split {split!r}, shard "
          f"{shard_names} of {shards[0].num_shards}"
      )
    else:
      self._description = f"A list of {len(source)} examples"

    def shard_batches(shard: seqio.ShardInfo) -> Iterator[Batch]:
      if isinstance(source, (seqio.Task, seqio.Mixture)):
        kwargs: dict[str, Any] = {}
        if isinstance(source, seqio.Task):
          kwargs["shuffle_buffer_size"] = shuffle_buffer_size
        ds = source.get_dataset(
            sequence_length=None,
            split=split,
            shuffle=shuffle,
            seed=seed,
            # One shard is everything; no need to ask the source for shards.
            shard_info=shard if shard.num_shards > 1 else None,
            num_epochs=num_epochs,
            try_in_mem_cache=False,
            **kwargs,
        )
        examples: Iterable[Example] = without_autotune(ds).as_numpy_iterator()
      else:
        examples = list_stream(source, shard, shuffle, seed, num_epochs)
      return pack_examples(examples, kind=kind, batch_size=self.rows // len(shards),
                           seq_len=seq_len, pack=pack, truncate=truncate, stats=self.stats)

    if len(shards) == 1:
      self._batches = shard_batches(shards[0])
    else:
      self._batches = _joined([shard_batches(s) for s in shards])
    for _ in range(start_position):  # regenerated, not cut: no host needs to agree
      if self._next_full() is None:
        break

  def __iter__(self) -> BatchIterator:
    return self

  def _next_full(self) -> Batch | None:
    """The next batch as built, seq_len long (None at the end of the data)."""
    batch = next(self._batches, None)
    if batch is not None:
      self.position += 1
    return batch

  def __next__(self) -> Batch:
    batch = self._next_full()
    if batch is None:
      if self.position == 0:
        raise ValueError(
            f"{self._description} produced no batches (stats: {self.stats}); "
            "the data is empty, or every sequence was skipped.")
      raise StopIteration
    if self.pad_to_multiple_of is not None:
      length = _agreed_length(batch_length(batch, self.pad_to_multiple_of, self.seq_len))
      batch = trim_batch(batch, length, self.seq_len)
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
    truncate: str | None = None,
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


def data_summary(
    source: str | seqio.Task | seqio.Mixture | Sequence[Example],
    *,
    kind: str,
    seq_len: int,
    split: str = "train",
    pack: bool = True,
    truncate: str | None = None,
) -> dict[str, int]:
  """The `stats` of one epoch of `split`, every host's examples included.

  A full pass over the data: meant for data held in memory (jsonl tasks,
  lists), not for large lazily read datasets.

  Raises:
    ValueError: as `BatchIterator`, e.g. when every sequence is skipped.
  """
  batches = BatchIterator(source, kind=kind, batch_size=1, seq_len=seq_len, split=split,
                          pack=pack, truncate=truncate, num_epochs=1, shuffle=False,
                          shard_info=seqio.ShardInfo(0, 1))
  for _ in batches:
    pass
  return dict(batches.stats)


def describe_stats(stats: Mapping[str, int]) -> str:
  """One line for the log: examples read, documents split, rows truncated and skipped.

  E.g. '1200 examples, 37 long documents split into 95 chunks, 12 truncated (3
  of them lost trained tokens), 0 dropped'.
  """
  c = {key: int(stats.get(key, 0)) for key in STATS_KEYS}
  examples = c["sequences"] - c["chunks"] + c["split_documents"] + c["dropped"] + c["too_short"]
  parts = [f"{examples} examples"]
  if c["split_documents"]:
    parts.append(f"{c['split_documents']} long documents split into {c['chunks']} chunks")
  truncated = f"{c['truncated']} truncated"
  if c["truncated"]:
    truncated += f" ({c['cut_targets']} of them lost trained tokens)"
  parts += [truncated, f"{c['dropped']} dropped"]
  if c["too_short"]:
    parts.append(f"{c['too_short']} too short")
  return ", ".join(parts)


def check_seq_len(length: int, max_seq_len: int, *, length_name: str = "DataConfig.seq_len",
                  max_name: str = "TransformerConfig.max_seq_len") -> None:
  """Raises ValueError when sequences of `length` tokens exceed the model's `max_seq_len`.

  The message names both numbers and the settings that change them
  (`length_name`, `max_name`: gin keys, or wherever the numbers come from).
  """
  if length > max_seq_len:
    raise ValueError(
        f"{length_name} = {length} exceeds the model's max_seq_len = {max_seq_len}; "
        f"lower {length_name} or raise {max_name}.")
