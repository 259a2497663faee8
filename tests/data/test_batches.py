"""Batches: shift, masks, packing, truncation, determinism, resumption, sharding."""

import numpy as np
import pytest
import seqio

from align_jax.data import (
    BATCH_FEATURES,
    BatchIterator,
    make_batch_iterator,
    pack_examples,
    register_function_task,
    register_jsonl_task,
    tokenize_record,
    write_jsonl,
)
from tests.hf_fixtures import WORDS

EOS = 1
ONE_HOST = seqio.ShardInfo(0, 1)


def _lm(*lengths, start=10):
  """lm examples whose tokens are distinct, consecutive integers."""
  out = []
  for n in lengths:
    out.append({"tokens": np.arange(start, start + n, dtype=np.int32)})
    start += n
  return out


def _sft(tokens, mask):
  return {"tokens": np.asarray(tokens, np.int32), "loss_mask": np.asarray(mask, np.int32)}


def _batches(examples, **kwargs):
  kwargs.setdefault("kind", "lm")
  return list(pack_examples(examples, **kwargs))


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# ------------------------------------------------------------ batch layout


def test_features_shapes_and_dtypes():
  (batch,) = _batches(_lm(5, 4), batch_size=2, seq_len=8, pack=False)
  assert tuple(batch) == BATCH_FEATURES
  for key, dtype in [("input_tokens", np.int32), ("target_tokens", np.int32), ("loss_weights", np.float32),
                     ("positions", np.int32), ("segment_ids", np.int32)]:
    assert batch[key].dtype == dtype and batch[key].shape == (2, 8)
  np.testing.assert_array_equal(batch["input_tokens"][0], [10, 11, 12, 13, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["target_tokens"][0], [11, 12, 13, 14, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["loss_weights"][0], [1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["positions"][0], [0, 1, 2, 3, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["input_tokens"][1], [15, 16, 17, 0, 0, 0, 0, 0])


def test_packing_segments_positions_and_padding():
  stats = {}
  batches = list(pack_examples(_lm(4, 3, 5, 2, 9), kind="lm", batch_size=2, seq_len=8, stats=stats))
  # Greedy in order: [4, 3] -> 3 + 2 = 5 positions; 5 -> 4 positions, then 2 -> 1 (fits: 5);
  # 9 -> 8 positions, a row of its own.
  assert len(batches) == 2
  first, second = batches
  np.testing.assert_array_equal(first["segment_ids"][0], [1, 1, 1, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(first["positions"][0], [0, 1, 2, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(first["input_tokens"][0], [10, 11, 12, 14, 15, 0, 0, 0])
  np.testing.assert_array_equal(first["target_tokens"][0], [11, 12, 13, 15, 16, 0, 0, 0])
  np.testing.assert_array_equal(first["segment_ids"][1], [1, 1, 1, 1, 2, 0, 0, 0])
  np.testing.assert_array_equal(first["positions"][1], [0, 1, 2, 3, 0, 0, 0, 0])
  np.testing.assert_array_equal(first["target_tokens"][1], [18, 19, 20, 21, 23, 0, 0, 0])
  np.testing.assert_array_equal(second["segment_ids"][0], [1] * 8)
  np.testing.assert_array_equal(second["positions"][0], np.arange(8))
  # The last batch is filled up with an all-zero row.
  for key in BATCH_FEATURES:
    assert not second[key][1].any()
  for batch in batches:
    pad = batch["segment_ids"] == 0
    for key in BATCH_FEATURES:
      assert not batch[key][pad].any()
  assert stats == {"sequences": 5, "split_documents": 0, "chunks": 0, "truncated": 0,
                   "cut_targets": 0, "dropped": 0, "too_short": 0,
                   "tokens": 3 + 2 + 4 + 1 + 8, "target_tokens": 18}


def test_packed_sft_weights_stay_in_their_segment():
  a = _sft([2, 5, 6, 7, 1], [0, 0, 1, 1, 1])
  b = _sft([2, 8, 9, 1], [0, 1, 1, 1])
  c = _sft([2, 3, 4], [0, 0, 0])
  (batch,) = _batches([a, b, c], kind="sft", batch_size=1, seq_len=12)
  seg = batch["segment_ids"][0]
  np.testing.assert_array_equal(seg, [1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0, 0])
  np.testing.assert_array_equal(batch["loss_weights"][0], [0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
  for k, example in enumerate([a, b, c], 1):
    in_seg = seg == k
    np.testing.assert_array_equal(batch["input_tokens"][0][in_seg], example["tokens"][:-1])
    np.testing.assert_array_equal(batch["target_tokens"][0][in_seg], example["tokens"][1:])
    np.testing.assert_array_equal(batch["loss_weights"][0][in_seg], example["loss_mask"][1:])


def test_packing_off_puts_one_sequence_per_row():
  batches = _batches(_lm(2, 2, 2), batch_size=2, seq_len=8, pack=False)
  assert len(batches) == 2
  rows = np.concatenate([b["segment_ids"] for b in batches])
  np.testing.assert_array_equal(rows.max(axis=1), [1, 1, 1, 0])
  np.testing.assert_array_equal(rows.sum(axis=1), [1, 1, 1, 0])


# ------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "policy, first_row, counts",
    [
        ("right", [10, 11, 12, 13], (3, 1, 0)),
        ("left", [11, 12, 13, 14], (3, 1, 0)),
        ("drop", [16, 17, 18, 0], (2, 0, 1)),
    ],
)
def test_truncation_policies(policy, first_row, counts):
  stats = {}
  examples = _lm(6, 4, 3)  # 6 tokens do not fit 4 positions; 5 would.
  batches = list(pack_examples(examples, kind="lm", batch_size=4, seq_len=4, pack=False,
                               truncate=policy, stats=stats))
  np.testing.assert_array_equal(batches[0]["input_tokens"][0], first_row)
  assert (stats["sequences"], stats["truncated"], stats["dropped"]) == counts
  if policy != "drop":
    # Truncation keeps the shift consistent.
    np.testing.assert_array_equal(batches[0]["target_tokens"][0], np.asarray(first_row) + 1)


def test_short_sequences_are_skipped_and_counted():
  stats = {}
  examples = [{"tokens": np.asarray([5])}, *_lm(3), {"tokens": np.asarray([], np.int32)}]
  (batch,) = pack_examples(examples, kind="lm", batch_size=1, seq_len=4, stats=stats)
  assert stats["too_short"] == 2 and stats["sequences"] == 1
  np.testing.assert_array_equal(batch["input_tokens"][0], [10, 11, 0, 0])


def test_argument_errors():
  with pytest.raises(ValueError, match="Unknown truncate policy 'middle'"):
    _batches(_lm(3), batch_size=1, seq_len=4, truncate="middle")
  with pytest.raises(ValueError, match="Unknown kind"):
    _batches(_lm(3), kind="rl", batch_size=1, seq_len=4)
  with pytest.raises(ValueError, match="missing \\['loss_mask'\\]"):
    _batches(_lm(3), kind="sft", batch_size=1, seq_len=4)
  with pytest.raises(ValueError, match="not divisible by the number of hosts 3"):
    BatchIterator(_lm(3), kind="lm", batch_size=4, seq_len=4, shard_info=seqio.ShardInfo(0, 3))


# -------------------------------------------------- preference and prompts


def test_preference_batches():
  pairs = [
      {"chosen_tokens": [2, 5, 6, 1], "chosen_loss_mask": [0, 0, 1, 1],
       "rejected_tokens": [2, 5, 7, 8, 1], "rejected_loss_mask": [0, 0, 1, 1, 1]},
      {"chosen_tokens": [2, 9, 1], "chosen_loss_mask": [0, 1, 1],
       "rejected_tokens": [2, 9, 3, 3, 3, 3, 3, 1], "rejected_loss_mask": [0, 1, 1, 1, 1, 1, 1, 1]},
  ]
  stats = {}
  (batch,) = pack_examples(pairs, kind="preference", batch_size=3, seq_len=6, stats=stats)
  assert set(batch) == {f"{side}_{key}" for side in ("chosen", "rejected") for key in BATCH_FEATURES}
  assert all(v.shape == (3, 6) for v in batch.values())
  np.testing.assert_array_equal(batch["chosen_input_tokens"][0], [2, 5, 6, 0, 0, 0])
  np.testing.assert_array_equal(batch["chosen_loss_weights"][0], [0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(batch["rejected_target_tokens"][0], [5, 7, 8, 1, 0, 0])
  np.testing.assert_array_equal(batch["rejected_loss_weights"][0], [0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(batch["rejected_segment_ids"][0], [1, 1, 1, 1, 0, 0])
  # Second pair: rejected side has 8 tokens > 7 and is cut on the right.
  np.testing.assert_array_equal(batch["rejected_input_tokens"][1], [2, 9, 3, 3, 3, 3])
  np.testing.assert_array_equal(batch["chosen_segment_ids"][1], [1, 1, 0, 0, 0, 0])
  assert not batch["chosen_segment_ids"][2].any()
  assert stats["sequences"] == 2 and stats["truncated"] == 1
  stats = {}
  (batch,) = pack_examples(pairs, kind="preference", batch_size=1, seq_len=6, truncate="drop", stats=stats)
  assert stats["dropped"] == 1 and stats["sequences"] == 1


def test_prompt_batches_are_left_padded():
  prompts = [{"prompt_tokens": [2, 5, 6]}, {"prompt_tokens": [2, 7, 8, 9, 10, 11]}, {"prompt_tokens": [2]}]
  stats = {}
  (batch,) = pack_examples(prompts, kind="prompt", batch_size=4, seq_len=5, truncate="left", stats=stats)
  assert set(batch) == {"prompt_tokens", "prompt_lengths"}
  assert batch["prompt_tokens"].dtype == np.int32 and batch["prompt_lengths"].dtype == np.int32
  np.testing.assert_array_equal(batch["prompt_tokens"], [[0, 0, 2, 5, 6], [7, 8, 9, 10, 11],
                                                          [0, 0, 0, 0, 2], [0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["prompt_lengths"], [3, 5, 1, 0])
  assert stats["truncated"] == 1 and stats["tokens"] == 9


# ------------------------------------------------- tasks end to end


def test_sft_weighted_targets_are_the_assistant_text(tmp_path, vocab):
  path = str(tmp_path / "sft.jsonl")
  records = [{"prompt": "the cat sat on", "response": "the red mat"},
             {"prompt": "hello", "response": "world !"}]
  write_jsonl(path, records)
  register_jsonl_task("p_sft", path, vocab, kind="sft")
  it = make_batch_iterator("p_sft", "train", batch_size=2, seq_len=64, kind="sft", seed=0,
                           pack=False, num_epochs=1)
  (batch,) = list(it)
  responses = []
  for row in range(2):
    weighted = batch["target_tokens"][row][batch["loss_weights"][row] > 0].tolist()
    assert weighted[-1] == EOS
    responses.append(weighted)
    assert vocab.decode(weighted) in {r["response"] for r in records}
  assert sorted(responses) == sorted(vocab.encode(r["response"]) + [EOS] for r in records)
  assert it.position == 1
  assert it.stats["target_tokens"] == sum(len(r) for r in responses)


def test_packed_sft_task_keeps_masks(tmp_path, vocab):
  path = str(tmp_path / "sft.jsonl")
  records = [{"prompt": w, "response": f"the {w}"} for w in WORDS[:6]]
  write_jsonl(path, records)
  register_jsonl_task("p_sft_packed", path, vocab, kind="sft")
  it = BatchIterator("p_sft_packed", kind="sft", batch_size=2, seq_len=128, num_epochs=1, shuffle=False,
                     shard_info=ONE_HOST)
  batches = list(it)
  answers = []
  for batch in batches:
    for row in range(batch["segment_ids"].shape[0]):
      seg = batch["segment_ids"][row]
      for k in range(1, seg.max() + 1):
        w = batch["loss_weights"][row][seg == k] > 0
        answers.append(batch["target_tokens"][row][seg == k][w].tolist())
  assert answers == [vocab.encode(r["response"]) + [EOS] for r in records]
  assert max(b["segment_ids"].max() for b in batches) > 1  # Something was packed.


def test_function_task_batches(vocab):
  register_function_task("p_fn_lm", lambda: [{"text": w} for w in WORDS[:5]], vocab, kind="lm")
  it = BatchIterator("p_fn_lm", kind="lm", batch_size=1, seq_len=64, num_epochs=1, shuffle=False,
                     shard_info=ONE_HOST)
  (batch,) = list(it)
  seg = batch["segment_ids"][0]
  assert seg.max() == 5
  for k, word in enumerate(WORDS[:5], 1):
    assert batch["target_tokens"][0][seg == k].tolist() == vocab.encode(word) + [EOS]
    assert (batch["loss_weights"][0][seg == k] == 1).all()


# ------------------------------------------ determinism, resumption, hosts


def _lm_task(vocab):
  records = [{"text": " ".join(WORDS[i:i + 1 + i % 4])} for i in range(24)]
  return register_function_task("p_order", lambda: records, vocab, kind="lm")


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize("source", ["list", "task"])
def test_seed_fixes_the_order(source, vocab):
  src = _lm(*[2 + i % 5 for i in range(24)]) if source == "list" else _lm_task(vocab).name
  make = lambda seed: BatchIterator(src, kind="lm", batch_size=2, seq_len=8, seed=seed,
                                    shard_info=ONE_HOST, shuffle_buffer_size=100)
  a, b, c = _take(make(1), 10), _take(make(1), 10), _take(make(2), 10)
  _assert_same(a, b)
  assert any(not np.array_equal(x["input_tokens"], y["input_tokens"]) for x, y in zip(a, c))


@pytest.mark.parametrize("source", ["list", "task"])
def test_resume_matches_the_uninterrupted_stream(source, vocab):
  src = _lm(*[2 + i % 5 for i in range(13)]) if source == "list" else _lm_task(vocab).name
  kwargs = dict(kind="lm", batch_size=2, seq_len=8, seed=3, shard_info=ONE_HOST)
  full = BatchIterator(src, **kwargs)
  stream = _take(full, 25)  # Several epochs (num_epochs=None repeats forever).
  first = BatchIterator(src, **kwargs)
  _take(first, 9)
  resumed = BatchIterator(src, start_position=first.position, **kwargs)
  assert resumed.position == 9
  _assert_same(_take(resumed, 16), stream[9:])
  assert resumed.position == full.position == 25
  assert resumed.stats == full.stats


def test_mixture_resumes_exactly(vocab):
  register_function_task("p_mix_a", lambda: [{"text": w} for w in WORDS[:4]], vocab, kind="lm")
  register_function_task("p_mix_b", lambda: [{"text": w} for w in WORDS[4:9]], vocab, kind="lm")
  seqio.MixtureRegistry.remove("p_mix")
  seqio.MixtureRegistry.add("p_mix", [("p_mix_a", 1.0), ("p_mix_b", 2.0)])
  make = lambda start: make_batch_iterator("p_mix", "train", batch_size=2, seq_len=8, kind="lm", seed=5,
                                           start_position=start)
  stream = _take(make(0), 8)
  _assert_same(_take(make(5), 3), stream[5:])


def test_finite_epochs_end(vocab):
  # Every sequence fills a row: 6 rows in batches of 4.
  it = BatchIterator(_lm(3, 3, 3), kind="lm", batch_size=4, seq_len=2, num_epochs=2, shard_info=ONE_HOST)
  batches = list(it)
  assert len(batches) == 2 and it.position == 2 and it.stats["sequences"] == 6
  assert batches[-1]["segment_ids"][:2].all() and not batches[-1]["segment_ids"][2:].any()
  with pytest.raises(StopIteration):
    next(it)
  late = BatchIterator(_lm(3, 3, 3), kind="lm", batch_size=4, seq_len=2, num_epochs=2, shard_info=ONE_HOST,
                       start_position=10)
  assert late.position == 2 and list(late) == []


@pytest.mark.parametrize("source", ["list", "task"])
def test_hosts_read_disjoint_shards(source, vocab):
  src = _lm(*[2 + i % 3 for i in range(24)]) if source == "list" else _lm_task(vocab).name
  seen = []
  for index in range(2):
    # Every example fits a row (the longest has 23 tokens): one row each.
    it = BatchIterator(src, kind="lm", batch_size=4, seq_len=32, num_epochs=1, seed=0, pack=False,
                       shard_info=seqio.ShardInfo(index, 2))
    batches = list(it)
    assert all(b["input_tokens"].shape == (2, 32) for b in batches)
    seen.append([tuple(row) for b in batches for row in b["input_tokens"] if row.any()])
  assert len(seen[0]) == len(seen[1]) == 12
  assert len(set(seen[0]) | set(seen[1])) == 24


@pytest.mark.parametrize("source", ["list", "task"])
def test_fixed_data_shards_give_the_same_batches_on_any_number_of_hosts(source, vocab):
  src = _lm(*[2 + i % 5 for i in range(24)]) if source == "list" else _lm_task(vocab).name

  def hosts(count):
    iterators = [BatchIterator(src, kind="lm", batch_size=8, seq_len=8, seed=3, data_shards=4,
                               shard_info=seqio.ShardInfo(k, count)) for k in range(count)]
    return [{key: np.concatenate([b[key] for b in parts]) for key in parts[0]}
            for parts in zip(*(_take(it, 6) for it in iterators))]
  one = hosts(1)
  _assert_same(hosts(2), one)
  _assert_same(hosts(4), one)
  # A host's rows are its shards' own: 2 rows per shard, shard 2 after shards 0 and 1.
  third = _take(BatchIterator(src, kind="lm", batch_size=8, seq_len=8, seed=3, data_shards=4,
                              shard_info=seqio.ShardInfo(2, 4)), 6)
  assert all(np.array_equal(t["input_tokens"], o["input_tokens"][4:6]) for t, o in zip(third, one))
  # One shard per host (the default) reads other batches on two hosts than on one.
  default = lambda count, k: BatchIterator(src, kind="lm", batch_size=8, seq_len=8, seed=3,
                                           shard_info=seqio.ShardInfo(k, count))
  two = [np.concatenate([next(default(2, 0))["input_tokens"], next(default(2, 1))["input_tokens"]])]
  assert not np.array_equal(two[0], next(default(1, 0))["input_tokens"])


def test_data_shards_must_fit_the_hosts_and_the_batch():
  with pytest.raises(ValueError, match="data_shards 3 must be a multiple of the number of hosts 2"):
    BatchIterator(_lm(3, 3), kind="lm", batch_size=4, seq_len=4, data_shards=3,
                  shard_info=seqio.ShardInfo(0, 2))
  with pytest.raises(ValueError, match="and divide batch_size 6"):
    BatchIterator(_lm(3, 3), kind="lm", batch_size=6, seq_len=4, data_shards=4,
                  shard_info=ONE_HOST)


def test_no_batches_at_all_is_an_error():
  it = BatchIterator(_lm(9, 9), kind="lm", batch_size=1, seq_len=4, truncate="drop", shard_info=ONE_HOST,
                     num_epochs=1)
  with pytest.raises(ValueError, match=r"A list of 2 examples produced no batches .*'dropped': 2"):
    next(it)
  # Repeating forever would never produce a batch either.
  it = BatchIterator(_lm(9, 9), kind="lm", batch_size=1, seq_len=4, truncate="drop", shard_info=ONE_HOST)
  with pytest.raises(ValueError, match=r"10000 sequences in a row were skipped"):
    next(it)
  with pytest.raises(ValueError, match="No examples for shard 2 of 3"):
    BatchIterator(_lm(3, 3), kind="lm", batch_size=3, seq_len=4, shard_info=seqio.ShardInfo(2, 3))


def test_default_shard_is_this_process():
  it = BatchIterator(_lm(3), kind="lm", batch_size=2, seq_len=4, num_epochs=1)
  assert it.shard_info.index == 0 and it.shard_info.num_shards == 1 and it.rows == 2


def test_tokenized_records_from_tasks_feed_the_iterator(vocab):
  examples = [tokenize_record({"prompt": w}, "prompt", vocab) for w in WORDS[:3]]
  (batch,) = list(BatchIterator(examples, kind="prompt", batch_size=3, seq_len=32, num_epochs=1,
                                shuffle=False, shard_info=ONE_HOST))
  for row, example in zip(range(3), examples):
    n = batch["prompt_lengths"][row]
    assert batch["prompt_tokens"][row][32 - n:].tolist() == example["prompt_tokens"].tolist()


def test_task_pipelines_run_without_autotuning(vocab, monkeypatch):
  # tf.data's autotune thread made deleting a long run's iterator wait for up to a minute.
  from align_jax.data import pipeline
  original, seen = pipeline.without_autotune, []
  def recording(ds):
    out = original(ds)
    seen.append(out.options().autotune.enabled)
    return out
  monkeypatch.setattr(pipeline, "without_autotune", recording)
  it = BatchIterator(_lm_task(vocab).name, kind="lm", batch_size=2, seq_len=8, num_epochs=1,
                     shard_info=ONE_HOST)
  first = next(it)
  assert seen == [False] and all(v.shape[0] == 2 for v in first.values())
