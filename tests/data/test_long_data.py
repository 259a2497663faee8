"""Data longer than a row: split documents, responses kept, drops counted, the summary line and
the seq_len check of the trainers."""

import json

import numpy as np
import pytest
import seqio

from align_jax.data import (
    DEFAULT_TRUNCATE,
    BatchIterator,
    check_seq_len,
    data_summary,
    describe_stats,
    make_batch_iterator,
    pack_examples,
    register_function_task,
    register_jsonl_task,
    tokenize_record,
    train_sentencepiece,
    write_jsonl,
)
from tests.hf_fixtures import WORDS, words_corpus

EOS = 1
ONE_HOST = seqio.ShardInfo(0, 1)


def _sft(n_prompt, n_response, start=100):
  """An sft example: `n_prompt` untrained tokens, then `n_response` trained ones."""
  tokens = np.arange(start, start + n_prompt + n_response, dtype=np.int32)
  mask = np.asarray([0] * n_prompt + [1] * n_response, np.int32)
  return {"tokens": tokens, "loss_mask": mask}


def _segments(batches, prefix=""):
  """(input tokens, target tokens, loss weights, positions) of every sequence, in order."""
  out = []
  for batch in batches:
    for row in range(batch[prefix + "segment_ids"].shape[0]):
      seg = batch[prefix + "segment_ids"][row]
      for k in range(1, seg.max() + 1):
        out.append(tuple(batch[prefix + key][row][seg == k] for key in
                         ("input_tokens", "target_tokens", "loss_weights", "positions")))
  return out


# ------------------------------------------------------- split documents


@pytest.mark.parametrize("pack", [True, False])
def test_long_document_is_split_into_chunks_that_train_every_token_once(pack):
  seq_len = 8
  document = np.arange(10, 10 + 28, dtype=np.int32)  # 3.5 * seq_len tokens.
  short = np.arange(500, 504, dtype=np.int32)
  stats = {}
  batches = list(pack_examples([{"tokens": document}, {"tokens": short}], kind="lm",
                               batch_size=2, seq_len=seq_len, pack=pack, stats=stats))
  chunks = _segments(batches)[:-1]
  # Chunks of seq_len + 1 tokens that share one token: seq_len targets each, the last fewer.
  assert [len(c[1]) for c in chunks] == [8, 8, 8, 3]
  targets = np.concatenate([c[1] for c in chunks])
  np.testing.assert_array_equal(targets, document[1:])
  # The first input and the targets are the document: every token but the first is a target
  # exactly once.
  np.testing.assert_array_equal(np.concatenate([chunks[0][0][:1], targets]), document)
  for inputs, target, weights, positions in chunks:
    np.testing.assert_array_equal(inputs[1:], target[:-1])  # Each chunk is shifted by one.
    assert (weights == 1).all()
    np.testing.assert_array_equal(positions, np.arange(len(inputs)))
  # The short document follows as a sequence of its own (packed after the last chunk).
  np.testing.assert_array_equal(_segments(batches)[-1][1], short[1:])
  rows = np.concatenate([b["segment_ids"] for b in batches])
  assert rows.max(axis=1).tolist() == ([1, 1, 1, 2] if pack else [1, 1, 1, 1, 1, 0])
  assert stats["split_documents"] == 1 and stats["chunks"] == 4
  assert stats["sequences"] == 5 and stats["truncated"] == 0
  assert stats["target_tokens"] == 27 + 3


def test_chunk_boundaries():
  # seq_len + 1 tokens fit a row as they are; one more token makes a second chunk of 2 tokens.
  stats = {}
  batches = list(pack_examples([{"tokens": np.arange(10, 15)}, {"tokens": np.arange(20, 26)}],
                               kind="lm", batch_size=4, seq_len=4, pack=False, stats=stats))
  assert [c[1].tolist() for c in _segments(batches)] == [
      [11, 12, 13, 14], [21, 22, 23, 24], [25]]
  assert stats["split_documents"] == 1 and stats["chunks"] == 2 and stats["sequences"] == 3


def test_lm_task_documents_are_split_by_default(vocab):
  text = " ".join(WORDS * 3)
  register_function_task("long_lm", lambda: [{"text": text}], vocab, kind="lm")
  it = BatchIterator("long_lm", kind="lm", batch_size=2, seq_len=16, num_epochs=1, shuffle=False,
                     shard_info=ONE_HOST)
  assert DEFAULT_TRUNCATE["lm"] == "split" and it.truncate == "split"
  chunks = _segments(list(it))
  tokens = tokenize_record({"text": text}, "lm", vocab)["tokens"]
  assert len(tokens) > 3 * 17
  np.testing.assert_array_equal(np.concatenate([chunks[0][0][:1]] + [c[1] for c in chunks]),
                                tokens)
  assert it.stats["split_documents"] == 1 and it.stats["chunks"] == len(chunks)


def test_split_is_for_documents_only():
  with pytest.raises(ValueError, match="truncate='split' splits documents .*not kind 'sft'"):
    list(pack_examples([_sft(2, 2)], kind="sft", batch_size=1, seq_len=4, truncate="split"))


# --------------------------------------------------- responses are kept


def test_keep_response_trims_the_prompt_from_the_left():
  stats = {}
  example = _sft(20, 5)  # Tokens 100..119 are the prompt, 120..124 the response.
  (batch,) = pack_examples([example], kind="sft", batch_size=1, seq_len=10,
                           truncate="keep_response", stats=stats)
  ((inputs, targets, weights, _),) = _segments([batch])
  # 11 tokens kept: the last 6 of the prompt, then the whole response.
  np.testing.assert_array_equal(inputs, np.arange(114, 124))
  np.testing.assert_array_equal(targets, np.arange(115, 125))
  np.testing.assert_array_equal(targets[weights > 0], np.arange(120, 125))
  assert stats["truncated"] == 1 and stats["cut_targets"] == 0 and stats["dropped"] == 0
  assert stats["target_tokens"] == 5


def test_keep_response_then_cuts_the_response_tail():
  stats = {}
  (batch,) = pack_examples([_sft(6, 12)], kind="sft", batch_size=1, seq_len=8,
                           truncate="keep_response", stats=stats)
  ((inputs, targets, weights, _),) = _segments([batch])
  # The prompt keeps only its last token (the first target's input); the response its start.
  np.testing.assert_array_equal(inputs, np.arange(105, 113))
  np.testing.assert_array_equal(weights, [1] * 8)
  assert stats["truncated"] == 1 and stats["cut_targets"] == 1


def test_keep_response_on_a_tokenized_sft_record(tmp_path, vocab):
  path = str(tmp_path / "sft.jsonl")
  record = {"prompt": " ".join(WORDS * 2), "response": "the red mat"}
  write_jsonl(path, [record])
  register_jsonl_task("long_sft", path, vocab, kind="sft")
  full = tokenize_record(record, "sft", vocab)["tokens"]
  response = vocab.encode(record["response"]) + [EOS]
  seq_len = 16
  assert len(full) > seq_len + 1
  it = make_batch_iterator("long_sft", "train", batch_size=1, seq_len=seq_len, kind="sft", seed=0,
                           truncate="keep_response", num_epochs=1)
  (batch,) = list(it)
  ((inputs, targets, weights, _),) = _segments([batch])
  # The kept row holds the whole response and trains on exactly its tokens.
  assert targets[weights > 0].tolist() == response
  assert targets[-len(response):].tolist() == response
  # What came before is the end of the prompt: the start was trimmed.
  kept = np.concatenate([inputs[:1], targets])
  assert len(kept) == seq_len + 1
  np.testing.assert_array_equal(kept, full[-(seq_len + 1):])
  assert it.stats["truncated"] == 1 and it.stats["cut_targets"] == 0


def test_keep_response_trims_both_sides_of_a_pair_alike():
  pair = {"chosen_tokens": np.arange(100, 112), "chosen_loss_mask": [0] * 9 + [1] * 3,
          "rejected_tokens": np.r_[np.arange(100, 109), np.arange(200, 206)],
          "rejected_loss_mask": [0] * 9 + [1] * 6}
  stats = {}
  (batch,) = pack_examples([pair], kind="preference", batch_size=1, seq_len=9,
                           truncate="keep_response", stats=stats)
  chosen = _segments([batch], "chosen_")[0]
  rejected = _segments([batch], "rejected_")[0]
  # The rejected side (15 tokens) loses 5 prompt tokens to fit 10; so does the chosen side.
  np.testing.assert_array_equal(chosen[0][:4], np.arange(105, 109))
  np.testing.assert_array_equal(rejected[0][:4], np.arange(105, 109))
  assert chosen[1][chosen[2] > 0].tolist() == [109, 110, 111]
  assert rejected[1][rejected[2] > 0].tolist() == list(range(200, 206))
  assert stats["truncated"] == 1 and stats["cut_targets"] == 0


def test_keep_response_keeps_process_labels():
  example = {"tokens": np.arange(100, 120), "label_values": [-1] * 15 + [1, -1, -1, 0, -1]}
  (batch,) = pack_examples([example], kind="process", batch_size=1, seq_len=8,
                           truncate="keep_response")
  weighted = batch["loss_weights"][0] > 0
  assert batch["target_tokens"][0][weighted].tolist() == [115, 118]
  assert batch["labels"][0][weighted].tolist() == [1, 0]


@pytest.mark.parametrize("kind, same_as", [("lm", "right"), ("prompt", "left")])
def test_keep_response_without_a_prompt_or_a_response(kind, same_as):
  feature = "tokens" if kind == "lm" else "prompt_tokens"
  examples = [{feature: np.arange(10, 22)}]
  kept = pack_examples(examples, kind=kind, batch_size=1, seq_len=6, truncate="keep_response")
  cut = pack_examples(examples, kind=kind, batch_size=1, seq_len=6, truncate=same_as)
  for a, b in zip(kept, cut, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------- rows left without loss tokens


def test_rows_that_would_lose_every_trained_token_are_dropped():
  examples = [_sft(20, 5), _sft(2, 3, start=300)]
  stats = {}
  (batch,) = pack_examples(examples, kind="sft", batch_size=1, seq_len=10, truncate="right",
                           stats=stats)
  # 'right' would keep 11 prompt tokens of the first row and train on nothing: it is dropped.
  ((inputs, _, _, _),) = _segments([batch])
  np.testing.assert_array_equal(inputs, [300, 301, 302, 303])
  assert stats["dropped"] == 1 and stats["sequences"] == 1 and stats["truncated"] == 0
  # A row that never had trained tokens is still kept (and cut) as before.
  stats = {}
  list(pack_examples([_sft(20, 0)], kind="sft", batch_size=1, seq_len=10, stats=stats))
  assert stats["sequences"] == 1 and stats["truncated"] == 1 and stats["dropped"] == 0


def test_a_pair_with_a_side_left_without_trained_tokens_is_dropped():
  pair = {"chosen_tokens": np.arange(100, 112), "chosen_loss_mask": [0] * 10 + [1] * 2,
          "rejected_tokens": np.arange(100, 104), "rejected_loss_mask": [0, 0, 1, 1]}
  stats = {}
  batches = list(pack_examples([pair], kind="preference", batch_size=1, seq_len=6,
                               truncate="right", stats=stats))
  assert batches == [] and stats["dropped"] == 1 and stats["sequences"] == 0
  stats = {}
  (batch,) = pack_examples([pair], kind="preference", batch_size=1, seq_len=6,
                           truncate="keep_response", stats=stats)
  assert stats["dropped"] == 0 and stats["target_tokens"] == 4


# ------------------------------------------------------------ summary


def test_data_summary_and_its_line():
  examples = [{"tokens": np.arange(10, 38)}, {"tokens": np.arange(40, 44)},
              {"tokens": np.asarray([5])}]
  stats = data_summary(examples, kind="lm", seq_len=8)
  assert stats["split_documents"] == 1 and stats["chunks"] == 4 and stats["too_short"] == 1
  assert describe_stats(stats) == (
      "3 examples, 1 long documents split into 4 chunks, 0 truncated, 0 dropped, 1 too short")
  sft = [_sft(20, 5), _sft(20, 0, start=200), _sft(2, 3, start=300), _sft(6, 12, start=400)]
  stats = data_summary(sft, kind="sft", seq_len=10, truncate="right")
  assert describe_stats(stats) == (
      "4 examples, 2 truncated (1 of them lost trained tokens), 1 dropped")


def _tiny_run(tmp_path, vocab_file, texts, *, seq_len, max_seq_len, init_from=None):
  from align_jax.models import TransformerConfig
  from align_jax.training import LoopConfig, OptimizerConfig
  from align_jax.training.lm_trainer import DataConfig, train_lm

  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  model = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                            head_dim=8, mlp_dim=64, max_seq_len=max_seq_len)
  data = DataConfig(kind="lm", train_files=(str(path),), batch_size=2, seq_len=seq_len,
                    truncate="split")
  return train_lm(str(tmp_path / "run"), model, data, vocab_file,
                  OptimizerConfig(learning_rate=1e-3, warmup_steps=1, total_steps=1),
                  LoopConfig(total_steps=1, checkpoint_every=1, progress_bar=False),
                  init_from=init_from)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  prefix = tmp_path_factory.mktemp("sp_file") / "spm"
  train_sentencepiece(words_corpus(300), str(prefix), 300)
  return f"{prefix}.model"


def test_the_trainer_prints_the_summary_before_training(tmp_path, vocab_file, capsys):
  texts = [" ".join(WORDS * 2), "the cat", "a dog sat"]
  # A missing run to start from stops it after the data is read, before any model is built.
  with pytest.raises(FileNotFoundError, match="missing_run"):
    _tiny_run(tmp_path, vocab_file, texts, seq_len=16, max_seq_len=32,
              init_from=str(tmp_path / "missing_run"))
  lines = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("[align_jax] data:")]
  assert len(lines) == 1
  assert lines[0].startswith("[align_jax] data: 3 examples, 1 long documents split into ")
  assert lines[0].endswith(", 0 truncated, 0 dropped (seq_len 16, truncate 'split')")


# ----------------------------------------------------- seq_len check


def test_check_seq_len_names_both_numbers_and_the_keys():
  check_seq_len(64, 64)
  with pytest.raises(ValueError, match=r"^DataConfig\.seq_len = 65 exceeds the model's "
                     r"max_seq_len = 64; lower DataConfig\.seq_len or raise "
                     r"TransformerConfig\.max_seq_len\.$"):
    check_seq_len(65, 64)


def test_train_lm_refuses_rows_longer_than_the_model(tmp_path, vocab_file, capsys):
  with pytest.raises(ValueError, match=r"DataConfig\.seq_len = 64 exceeds the model's "
                     r"max_seq_len = 32; .*TransformerConfig\.max_seq_len"):
    _tiny_run(tmp_path, vocab_file, ["the cat"], seq_len=64, max_seq_len=32)
  assert "[align_jax] data:" not in capsys.readouterr().out  # Nothing was read yet.
  assert not (tmp_path / "run").exists()


def test_train_lm_checks_a_hugging_face_model_by_its_config(tmp_path, vocab_file):
  from tests.hf_fixtures import save_tiny_llama
  hf_dir = tmp_path / "hf"
  save_tiny_llama(hf_dir, max_positions=32)
  with pytest.raises(ValueError, match=r"max_seq_len = 32; lower DataConfig\.seq_len or raise "
                     r"max_position_embeddings in .*hf/config\.json"):
    _tiny_run(tmp_path, vocab_file, ["the cat"], seq_len=64, max_seq_len=2048,
              init_from=str(hf_dir))
