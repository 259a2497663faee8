"""seqio tasks: record schemas, error messages, jsonl / function / TFDS sources."""

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from align_jax.data import (
    FEATURES,
    JsonlError,
    encode_prompt,
    get_template,
    register_function_task,
    register_jsonl_task,
    register_tfds_task,
    tokenize_record,
    train_sentencepiece,
    validate_record,
    write_jsonl,
)
from tests.hf_fixtures import words_corpus

EOS, BOS = 1, 2


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  corpus = words_corpus(300) + ["User: Assistant: System:"] * 20
  prefix = tmp_path_factory.mktemp("sp") / "spm"
  return train_sentencepiece(corpus, str(prefix), 300)


@pytest.fixture(scope="module")
def marker_vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  """A vocabulary whose single tokens include the 'chatml' and 'gemma' turn markers."""
  prefix = tmp_path_factory.mktemp("sp_markers") / "spm"
  return train_sentencepiece(words_corpus(300), str(prefix), 300, user_defined_symbols=[
      "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"])


def _examples(task, split="train"):
  ds = task.get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
  return list(ds.as_numpy_iterator())


# ----------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    "kind, record, message",
    [
        ("lm", {"txt": "a"}, "missing field 'text'"),
        ("lm", {"text": 5}, "field 'text' must be a string, got int"),
        ("sft", {"prompt": "a"}, "missing field 'response'"),
        ("sft", {"response": "a"}, "missing field 'prompt'"),
        ("sft", {"messages": []}, "'messages' must be a non-empty list"),
        ("sft", {"messages": [{"role": "bot", "content": "x"}]}, "message 0 has role 'bot'"),
        ("sft", {"messages": [{"role": "user", "content": 1}]}, "message 0 needs a string 'content'"),
        ("sft", {"messages": [{"role": "user", "content": "x"}]}, "last message must have role 'assistant'"),
        ("sft", {"prompt": "a", "response": "b", "system": 3}, "field 'system' must be a string"),
        ("preference", {"prompt": "a", "chosen": "b"}, "missing field 'rejected'"),
        ("preference", {"prompt": "a", "chosen": None, "rejected": "c"}, "'chosen' must be a string, got NoneType"),
        ("preference", {"prompt": "a", "chosen": "b", "rejected": "c", "suffix": 3}, "field 'suffix' must be a string"),
        ("prompt", {"question": "a"}, "missing field 'prompt'"),
        ("process", {"prompt": "a", "steps": ["b", "c"], "labels": [1]}, "list of 2 labels"),
        ("process", {"prompt": "a", "steps": ["b"], "labels": [2]}, "(0 or 1)"),
        ("process", {"prompt": "a", "response": "b", "label": "yes"}, "'label' must be 0 or 1"),
        ("process", {"prompt": "a"}, "need 'steps' and 'labels'"),
        ("prompt", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
         "must not have role 'assistant'"),
    ],
)
def test_validate_record_names_the_problem(kind, record, message):
  assert message in validate_record(record, kind)


@pytest.mark.parametrize(
    "kind, record",
    [
        ("lm", {"text": "the cat", "extra": 1}),
        ("sft", {"prompt": "a", "response": "b", "system": "s"}),
        ("sft", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        ("preference", {"prompt": "a", "chosen": "b", "rejected": "c"}),
        ("prompt", {"prompt": "a"}),
        ("process", {"prompt": "a", "steps": ["b", "c"], "labels": [1, 0]}),
        ("process", {"prompt": "a", "response": "b", "label": 1}),
        ("prompt", {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}),
    ],
)
def test_valid_records_pass(kind, record):
  assert validate_record(record, kind) is None


def test_unknown_kind(vocab):
  with pytest.raises(ValueError, match="Unknown task kind 'dpo'"):
    validate_record({}, "dpo")
  with pytest.raises(ValueError, match="Unknown task kind"):
    register_function_task("t_bad_kind", lambda: [], vocab, kind="dpo")


# ------------------------------------------------------------ tokenization


def test_lm_tokens(vocab):
  ids = vocab.encode("the big cat")
  assert tokenize_record({"text": "the big cat"}, "lm", vocab)["tokens"].tolist() == [BOS, *ids, EOS]
  plain = tokenize_record({"text": "the big cat"}, "lm", vocab, add_bos=False, add_eos=False)
  assert plain["tokens"].tolist() == ids
  assert plain["tokens"].dtype == np.int32


def test_sft_mask_covers_exactly_the_assistant_tokens(vocab):
  out = tokenize_record({"prompt": "the cat sat", "response": "on the mat"}, "sft", vocab)
  tokens, mask = out["tokens"], out["loss_mask"]
  assert tokens[0] == BOS and mask[0] == 0
  assert tokens[mask == 1].tolist() == vocab.encode("on the mat") + [EOS]
  # The trained tokens form the tail of the sequence.
  assert mask.tolist() == [0] * (len(mask) - int(mask.sum())) + [1] * int(mask.sum())
  expected = get_template("plain").render(
      [{"role": "user", "content": "the cat sat"}, {"role": "assistant", "content": "on the mat"}], vocab)
  assert tokens[1:].tolist() == expected.token_ids.tolist()


def test_sft_messages_train_every_assistant_turn(vocab):
  messages = [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": "hello"},
      {"role": "assistant", "content": "world"},
      {"role": "user", "content": "the dog"},
      {"role": "assistant", "content": "ran on"},
  ]
  out = tokenize_record({"messages": messages}, "sft", vocab)
  trained = out["tokens"][out["loss_mask"] == 1].tolist()
  assert trained == vocab.encode("world") + [EOS] + vocab.encode("ran on") + [EOS]


def test_bos_and_eos_follow_the_template(marker_vocab):
  vocab = marker_vocab
  record = {"prompt": "the cat", "response": "sat"}
  # chatml has no BOS and does not end turns with EOS: both are added.
  out = tokenize_record(record, "sft", vocab, chat_template="chatml")
  assert out["tokens"][0] == BOS and out["tokens"][-1] == EOS and out["loss_mask"][-1] == 1
  bare = tokenize_record(record, "sft", vocab, chat_template="chatml", add_bos=False, add_eos=False)
  assert bare["tokens"].tolist() == out["tokens"][1:-1].tolist()
  # gemma starts with its own BOS: no second one.
  gemma = tokenize_record(record, "sft", vocab, chat_template=get_template("gemma"))
  assert gemma["tokens"][0] == BOS and gemma["tokens"][1] != BOS


def test_preference_and_prompt_features(vocab):
  record = {"prompt": "the cat", "chosen": "sat", "rejected": "ran away"}
  out = tokenize_record(record, "preference", vocab)
  assert set(out) == set(FEATURES["preference"])
  for side in ("chosen", "rejected"):
    tokens, mask = out[f"{side}_tokens"], out[f"{side}_loss_mask"]
    assert tokens[mask == 1].tolist() == vocab.encode(record[side]) + [EOS]
  # The prompt part is shared.
  n = int((out["chosen_loss_mask"] == 0).sum())
  assert out["chosen_tokens"][:n].tolist() == out["rejected_tokens"][:n].tolist()

  prompt = tokenize_record({"prompt": "the cat"}, "prompt", vocab)["prompt_tokens"]
  assert prompt.tolist() == out["chosen_tokens"][:n].tolist()
  assert prompt[0] == BOS and EOS not in prompt.tolist()
  assert prompt[-len(vocab.encode("Assistant: ")):].tolist() == vocab.encode("Assistant: ")


def test_process_labels_sit_on_each_step_end_and_outcome_on_eos(vocab):
  record = {"prompt": "the cat", "steps": ["sat down", "ran away"], "labels": [1, 0]}
  out = tokenize_record(record, "process", vocab)
  prompt = tokenize_record({"prompt": "the cat"}, "prompt", vocab)["prompt_tokens"].tolist()
  first, second = vocab.encode("sat down"), vocab.encode("ran away")
  assert out["tokens"].tolist() == prompt + first + second + [EOS]
  labelled = {i: v for i, v in enumerate(out["label_values"].tolist()) if v >= 0}
  assert labelled == {len(prompt) + len(first) - 1: 1,
                      len(prompt) + len(first) + len(second) - 1: 0}
  outcome = tokenize_record({"prompt": "the cat", "response": "sat down", "label": 1},
                            "process", vocab)
  assert outcome["tokens"].tolist() == prompt + first + [EOS]
  assert [v for v in outcome["label_values"].tolist() if v >= 0] == [1]
  assert outcome["label_values"][-1] == 1


# ------------------------------------------------------------- jsonl tasks


def test_jsonl_task_yields_tokenized_examples(tmp_path, vocab):
  train, valid = str(tmp_path / "train.jsonl"), str(tmp_path / "valid.jsonl")
  records = [{"prompt": f"the {w}", "response": f"a {w} sat"} for w in ("cat", "dog", "bird")]
  write_jsonl(train, records[:2])
  write_jsonl(valid, records[2:])
  task = register_jsonl_task("t_jsonl_sft", {"train": train, "validation": [valid]}, vocab, kind="sft")
  assert seqio.get_mixture_or_task("t_jsonl_sft") is task
  assert set(task.output_features) == {"tokens", "loss_mask"}
  assert task.source.num_input_examples("train") == 2
  for split, expected in (("train", records[:2]), ("validation", records[2:])):
    got = _examples(task, split)
    assert len(got) == len(expected)
    for example, record in zip(got, expected):
      want = tokenize_record(record, "sft", vocab)
      assert example["tokens"].dtype == np.int32
      np.testing.assert_array_equal(example["tokens"], want["tokens"])
      np.testing.assert_array_equal(example["loss_mask"], want["loss_mask"])


def test_jsonl_task_reads_several_files_and_reregisters(tmp_path, vocab):
  a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
  write_jsonl(a, [{"text": "the cat"}])
  write_jsonl(b, [{"text": "the dog"}, {"text": "a bird"}])
  register_jsonl_task("t_jsonl_lm", a, vocab, kind="lm")
  task = register_jsonl_task("t_jsonl_lm", [a, b], vocab, kind="lm", add_bos=False)
  assert seqio.get_mixture_or_task("t_jsonl_lm") is task
  got = [e["tokens"].tolist() for e in _examples(task)]
  assert got == [vocab.encode(t) + [EOS] for t in ("the cat", "the dog", "a bird")]


def test_malformed_line_names_file_line_and_field(tmp_path, vocab, marker_vocab):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c"}\n')
  with pytest.raises(JsonlError, match=r"bad\.jsonl, line 3: missing field 'response'"):
    register_jsonl_task("t_bad", str(path), vocab, kind="sft")
  path.write_text('{"text": "a"}\n{"text": ["b"]}\n')
  with pytest.raises(JsonlError, match=r"bad\.jsonl, line 2: field 'text' must be a string, got list"):
    register_jsonl_task("t_bad", str(path), vocab, kind="lm")
  path.write_text('{"text": "a"}\n{"text": \n')
  with pytest.raises(JsonlError, match=r"bad\.jsonl, line 2: not valid JSON"):
    register_jsonl_task("t_bad", str(path), vocab, kind="lm")
  # Errors from the chat template are located the same way.
  path.write_text('{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n')
  with pytest.raises(JsonlError, match=r"bad\.jsonl, line 1: .*message 1 must have role 'user'"):
    register_jsonl_task("t_bad", str(path), marker_vocab, kind="sft", chat_template="gemma")
  assert "t_bad" not in seqio.TaskRegistry.names()


def test_a_template_whose_markers_the_vocabulary_lacks_stops_registration(tmp_path, vocab,
                                                                         marker_vocab):
  path = tmp_path / "sft.jsonl"
  write_jsonl(str(path), [{"prompt": "hi", "response": "the cat"}])
  # Not a complaint about line 1: the template and the vocabulary do not fit.
  with pytest.raises(ValueError, match=r"^chat template 'chatml' marks turns with the special "
                     r"tokens <\|im_start\|>, <\|im_end\|>, but the vocabulary .*spm\.model "
                     r"lacks <\|im_start\|>, <\|im_end\|> as single tokens") as error:
    register_jsonl_task("t_markers", str(path), vocab, kind="sft", chat_template="chatml")
  assert not isinstance(error.value, JsonlError)
  assert "t_markers" not in seqio.TaskRegistry.names()
  # tokenize_record (PPO prompts, reward inputs) refuses it the same way.
  with pytest.raises(ValueError, match=r"lacks <start_of_turn>, <end_of_turn> as single"):
    tokenize_record({"prompt": "hi"}, "prompt", vocab, chat_template="gemma")
  # With the markers as single tokens, each turn holds one start and one end token.
  task = register_jsonl_task("t_markers", str(path), marker_vocab, kind="sft",
                             chat_template="chatml")
  tokens = _examples(task)[0]["tokens"].tolist()
  start, end = (marker_vocab.encode(marker)[-1] for marker in ("<|im_start|>", "<|im_end|>"))
  assert tokens.count(start) == 2 and tokens.count(end) == 2


def test_encode_prompt_is_the_start_of_a_training_example(vocab, marker_vocab):
  text = "the big cat"
  lm = tokenize_record({"text": text}, "lm", vocab)["tokens"].tolist()
  assert encode_prompt(vocab, text) == lm[:-1] == [BOS] + vocab.encode(text)
  assert encode_prompt(vocab, text, add_bos=False) == vocab.encode(text)
  for template in ("plain", "chatml"):
    prompt = tokenize_record({"prompt": text}, "prompt", marker_vocab,
                             chat_template=template)["prompt_tokens"].tolist()
    assert encode_prompt(marker_vocab, text, chat_template=template) == prompt
    assert prompt[0] == BOS and prompt.count(BOS) == 1


def test_empty_dataset_fails_at_registration(tmp_path, vocab):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n  \n")
  with pytest.raises(ValueError, match=r"split 'train': the dataset is empty .*empty\.jsonl"):
    register_jsonl_task("t_empty", str(empty), vocab, kind="lm")
  with pytest.raises(FileNotFoundError):
    register_jsonl_task("t_empty", str(tmp_path / "missing.jsonl"), vocab, kind="lm")


# ---------------------------------------------------------- function tasks


def test_function_task(vocab):
  def problems(split):
    n = 3 if split == "train" else 1
    return [{"prompt": f"{split} {i}"} for i in range(n)]

  task = register_function_task(
      "t_fn_prompt", problems, vocab, kind="prompt", splits=("train", "validation"))
  assert set(task.output_features) == {"prompt_tokens"}
  got = _examples(task, "train")
  assert [e["prompt_tokens"].tolist() for e in got] == [
      tokenize_record(r, "prompt", vocab)["prompt_tokens"].tolist() for r in problems("train")]
  assert len(_examples(task, "validation")) == 1

  # A function without arguments works too.
  task = register_function_task(
      "t_fn_pref", lambda: [{"prompt": "a", "chosen": "b", "rejected": "c"}], vocab, kind="preference")
  (example,) = _examples(task)
  assert set(example) == set(FEATURES["preference"])


def test_function_task_errors(vocab):
  register_function_task("t_fn_bad", lambda: [{"prompt": "a"}, {"prompt": 1}], vocab, kind="prompt")
  with pytest.raises(ValueError, match=r"'t_fn_bad', split 'train', record 1: field 'prompt' must be a string"):
    _examples(seqio.get_mixture_or_task("t_fn_bad"))

  def nothing():
    return []

  register_function_task("t_fn_empty", nothing, vocab, kind="lm")
  with pytest.raises(ValueError, match=r"'t_fn_empty', split 'train': the dataset is empty \(nothing"):
    _examples(seqio.get_mixture_or_task("t_fn_empty"))


# -------------------------------------------------------------- TFDS tasks


def test_tfds_task_on_mock_data(vocab):
  with tfds.testing.mock_data(num_examples=4):
    raw = list(tfds.load("natural_questions_open", split="train").as_numpy_iterator())
    task = register_tfds_task(
        "t_nq_open", "natural_questions_open:1.0.0", vocab, kind="sft",
        field_map={"prompt": "question", "response": "answer"})
    got = _examples(task)
  assert len(got) == len(raw) == 4
  for example, source in zip(got, raw):
    record = {"prompt": source["question"].decode(), "response": source["answer"][0].decode()}
    want = tokenize_record(record, "sft", vocab)
    np.testing.assert_array_equal(example["tokens"], want["tokens"])
    np.testing.assert_array_equal(example["loss_mask"], want["loss_mask"])
    assert example["tokens"][example["loss_mask"] == 1].tolist() == vocab.encode(record["response"]) + [EOS]


def test_tfds_task_field_errors(vocab):
  with pytest.raises(ValueError, match=r"must map exactly \('prompt', 'response'\)"):
    register_tfds_task("t_nq_bad", "natural_questions_open:1.0.0", vocab, kind="sft",
                       field_map={"prompt": "question"})
  with tfds.testing.mock_data(num_examples=2):
    task = register_tfds_task("t_nq_bad", "natural_questions_open:1.0.0", vocab, kind="lm",
                              field_map={"text": "answers"})
    with pytest.raises(ValueError, match=r"'answers' not found .*\['answer', 'question'\]"):
      _examples(task)
