"""RECITE's dataset readers on mock TFDS data and a tiny HotpotQA-format file."""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from align_jax.methods.recite import data


@pytest.mark.parametrize("dataset, tfds_name", [
    ("natural_questions_open", "natural_questions_open"),
    ("trivia_qa", "trivia_qa/rc.nocontext")])
def test_tfds_qa_tasks_read_questions_and_every_answer(dataset, tfds_name):
  with tfds.testing.mock_data(num_examples=5):
    raw = list(tfds.load(tfds_name, split="validation").as_numpy_iterator())
    data.register_tfds_qa_task(f"recite_{dataset}", dataset)
    records = data.qa_records(f"recite_{dataset}", "validation", limit=3)
  assert len(records) == 3
  for record, source in zip(records, raw):
    assert record["question"] == source["question"].decode()
    if dataset == "trivia_qa":
      expected = [source["answer"]["value"]] + list(source["answer"]["aliases"])
    else:
      expected = list(source["answer"])
    expected = list(dict.fromkeys(a.decode() for a in expected))
    assert record["answers"] == [a for a in expected if a.strip()]


def _nq_example(question, annotations):
  """A hand-made natural_questions example: annotations are (long start_token, [short
  answer texts], yes_no_answer) triples."""
  return {"question": {"text": question},
          "annotations": {
              "long_answer": {"start_token": [a[0] for a in annotations]},
              "short_answers": {"text": [a[1] for a in annotations]},
              "yes_no_answer": [a[2] for a in annotations]}}


_NQ_SIGNATURE = {
    "question": {"text": tf.TensorSpec([], tf.string)},
    "annotations": {
        "long_answer": {"start_token": tf.TensorSpec([None], tf.int64)},
        "short_answers": {"text": tf.RaggedTensorSpec([None, None], tf.string)},
        "yes_no_answer": tf.TensorSpec([None], tf.int64)}}

_NQ_EXAMPLES = [
    _nq_example("no long answer", [(-1, [], -1), (-1, [], -1)]),
    _nq_example("long but no short", [(12, [], -1), (-1, [], -1)]),
    _nq_example("long and short", [(12, ["Ada Lovelace"], -1), (-1, [], -1)]),
    _nq_example("yes/no only", [(5, [], 1), (7, [], 0)]),
    _nq_example("blank short text", [(5, ["  "], -1)]),
    _nq_example("two annotators", [(3, ["Usk", "the Usk"], -1), (3, ["the Usk", "Wye"], -1),
                                   (4, ["Usk"], 0)]),
    _nq_example("short without long", [(-1, ["stray"], -1), (8, ["kept"], -1)]),
]
_NQ_KEPT = [{"question": "long and short", "answers": ["Ada Lovelace"]},
            {"question": "two annotators", "answers": ["Usk", "the Usk", "Wye"]},
            {"question": "short without long", "answers": ["kept"]}]


def _nq_dataset():
  def generate():
    for example in _NQ_EXAMPLES:
      annotations = dict(example["annotations"])
      annotations["short_answers"] = {"text": tf.ragged.constant(
          annotations["short_answers"]["text"], dtype=tf.string, ragged_rank=1)}
      yield {**example, "annotations": annotations}
  return tf.data.Dataset.from_generator(generate, output_signature=_NQ_SIGNATURE)


def test_nq_short_answers_of_hand_made_examples():
  got = [[a.decode() for a in data.nq_short_answers(
              {"annotations": {
                  "long_answer": {"start_token": tf.constant(
                      e["annotations"]["long_answer"]["start_token"], tf.int64)},
                  "short_answers": {"text": tf.ragged.constant(
                      e["annotations"]["short_answers"]["text"], dtype=tf.string,
                      ragged_rank=1)}}}).numpy()]
         for e in _NQ_EXAMPLES]
  assert got == [[], [], ["Ada Lovelace"], [], [], ["Usk", "the Usk", "Wye"], ["kept"]]


def test_nq_filter_keeps_long_and_short_answer_examples():
  kept = [{"question": ex["question"].decode(), "answers": [a.decode() for a in ex["answers"]]}
          for ex in data.nq_long_and_short_answers(_nq_dataset()).as_numpy_iterator()]
  assert kept == _NQ_KEPT


def test_nq_task_reads_the_filtered_set_end_to_end():
  def as_dataset(self, split, *args, **kwargs):
    del self, args, kwargs
    assert split == "validation"
    return _nq_dataset()
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    task = data.register_tfds_qa_task("recite_natural_questions_hand", "natural_questions")
    assert data.qa_records(task, "validation") == _NQ_KEPT
    assert data.qa_records(task, "validation", limit=2) == _NQ_KEPT[:2]


def test_nq_source_reads_the_pinned_builder_without_the_page():
  # Random mock data sizes each annotation field independently (and short answers densely),
  # unlike real NQ, so the filter is tested on the hand-made examples above; here the
  # pinned builder and the partial decoding are checked on the random mock.
  assert data.TFDS_QA["natural_questions"] == "natural_questions/default:0.1.0"
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    task = data.register_tfds_qa_task("recite_natural_questions", "natural_questions")
    examples = list(task.source.get_dataset("validation", shuffle=False).as_numpy_iterator())
  assert len(examples) == 3
  for example in examples:
    assert set(example) == {"question", "annotations"}
    assert isinstance(example["question"]["text"], bytes)
    assert set(example["annotations"]) == {"long_answer", "short_answers"}


@pytest.mark.parametrize("answers", [["<unk>"], ["<UNK>", ""], [""], []])
def test_a_split_without_gold_answers_is_refused(answers):
  rows = [("Who wrote Emma?", ["Jane Austen"]), ("Where is Usk?", answers),
          ("Third?", ["<unk>"])]

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    return tf.data.Dataset.from_generator(
        lambda: ({"question": q, "answers": np.array(a, dtype=object).astype(bytes)
                                            if a else np.zeros([0], bytes)}
                 for q, a in rows),
        output_signature={"question": tf.TensorSpec([], tf.string),
                          "answers": tf.TensorSpec([None], tf.string)})
  seqio.TaskRegistry.remove("recite_no_gold")
  task = seqio.TaskRegistry.add(
      "recite_no_gold", source=seqio.FunctionDataSource(dataset_fn, splits=["test"]),
      output_features={})
  assert data.qa_records(task, "test", limit=1) == [
      {"question": "Who wrote Emma?", "answers": ["Jane Austen"]}]
  with pytest.raises(ValueError, match=r"task 'recite_no_gold', split 'test', example 1: "
                     r"no gold answers .*TriviaQA's test split.*evaluate on 'validation'"):
    data.qa_records(task, "test")


def test_trivia_qa_test_split_with_unk_answers_is_refused():
  def as_dataset(self, split, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensors(
        {"question": tf.constant(f"a {split} question"),
         "answer": {"value": tf.constant("<unk>"), "aliases": tf.zeros([0], tf.string)}})
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    data.register_tfds_qa_task("recite_trivia_qa_test", "trivia_qa")
    with pytest.raises(ValueError, match=r"'recite_trivia_qa_test', split 'test', example 0"):
      data.qa_records("recite_trivia_qa_test", "test")


def test_unknown_tfds_qa_dataset_is_refused():
  with pytest.raises(ValueError, match="unknown QA dataset 'squad'"):
    data.register_tfds_qa_task("x", "squad")


def test_hotpotqa_file_as_json_list_or_jsonl(tmp_path):
  entries = [{"_id": "a1", "question": "Which city hosts the Quill Works?", "answer": "Usk",
              "type": "bridge", "level": "easy", "context": [], "supporting_facts": []},
             {"_id": "a2", "question": "Were Ada and Bo both painters?", "answer": "yes",
              "type": "comparison", "level": "hard"}]
  listed = tmp_path / "dev.json"
  listed.write_text(json.dumps(entries))
  lines = tmp_path / "dev.jsonl"
  lines.write_text("".join(json.dumps(e) + "\n" for e in entries))
  for path in (listed, lines):
    records = data.read_hotpotqa(str(path))
    assert [r["answers"] for r in records] == [["Usk"], ["yes"]]
    assert [r["id"] for r in records] == ["a1", "a2"] and records[1]["type"] == "comparison"
  task = data.register_hotpotqa_task("recite_hotpotqa_test", {"validation": str(listed)})
  assert data.qa_records(task, "validation") == [
      {"question": e["question"], "answers": [e["answer"]]} for e in entries]


def test_malformed_hotpotqa_entries_name_the_file_and_entry(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps([{"question": "q", "answer": "a"}, {"question": "q2"}]))
  with pytest.raises(ValueError, match=r"bad.json, entry 1: field 'answer' must be a string"):
    data.read_hotpotqa(str(bad))
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"question": "q", "answer": "a"}\n{oops\n')
  with pytest.raises(ValueError, match=r"broken.jsonl, line 2: not valid JSON"):
    data.read_hotpotqa(str(broken))


def test_recite_notebook_evaluates_a_hotpotqa_file_with_a_hugging_face_model(tmp_path):
  # launch/colab/recite_hugging_face.py, on a tiny model saved by transformers and two
  # questions instead of a downloaded model and HotpotQA's dev set.
  from align_jax import main as entry
  from hf_fixtures import save_tiny_llama
  from tests.notebooks import execute, outputs
  model_dir = tmp_path / "hf"
  save_tiny_llama(model_dir, max_positions=2048)  # a near-character-level tokenizer
  dev = tmp_path / "dev.json"
  dev.write_text(json.dumps([{"_id": "a", "question": "Where is Quill Works?", "answer": "Usk"},
                             {"_id": "b", "question": "Who founded it?", "answer": "Ada"}]))
  workdir = tmp_path / "run"
  smaller = ["--gin.ReciteConfig.recitation_tokens=8", "--gin.ReciteConfig.answer_tokens=4",
             "--gin.ReciteConfig.reasoning_tokens=6", "--gin.recite_eval.path_counts=(1, 2)"]
  notebook = execute("recite_hugging_face", tmp_path, WORKDIR=str(workdir), MODEL=str(model_dir),
                     HOTPOTQA_DEV=str(dev), QUESTIONS=2, PATHS=2, OVERRIDES=smaller)
  scores = json.loads((workdir / "scores.json").read_text())
  assert set(scores) == {"direct", "direct_sc", "chain_of_thought", "chain_of_thought_sc",
                         "multi_recite"}
  assert all(s["n"] == 2 and s["convention"] == "squad" for s in scores.values())
  # Compute-matched baselines: the self-consistent ones sample as many paths as recitation.
  for method in ("direct_sc", "chain_of_thought_sc"):
    rows = [json.loads(line) for line in (workdir / f"{method}.jsonl").read_text().splitlines()]
    assert [len(r["paths"]) for r in rows] == [2, 2]
    assert [r["paths"] for r in scores[method]["em_by_paths"]] == [1, 2]
  assert [r["paths"] for r in scores["multi_recite"]["em_by_paths"]] == [1, 2]
  shares = scores["multi_recite"]["error_analysis"]
  assert abs(sum(shares.values()) - 1.0) < 1e-9
  rows = [json.loads(line) for line in (workdir / "multi_recite.jsonl").read_text().splitlines()]
  assert [len(r["paths"]) for r in rows] == [2, 2]
  # The notebook prints every method's scores, plots EM by paths and shows recitations.
  printed = "".join(outputs(notebook, "stream"))
  for method, entry_scores in scores.items():
    assert f"{method:>22}: EM {entry_scores['em']:.3f}  F1 {entry_scores['f1']:.3f}" in printed
  assert len(outputs(notebook, "image/png")) == 1
  assert printed.count("Q: ") == 2 and "recitation 1: " in printed
  command = ["--gin_file=gin/methods/recite/hotpotqa.gin", f"--gin.WORKDIR='{workdir}'",
             f"--gin.CHECKPOINT='{model_dir}'", f"--gin.HOTPOTQA_DEV='{dev}'"]
  with pytest.raises(FileExistsError, match="already exists"):
    entry.main(command)


def test_exemplar_files_load():
  from align_jax.methods.recite.evaluate import load_exemplars
  for name, hops in (("natural_questions_open.jsonl", 1), ("trivia_qa.jsonl", 1),
                     ("hotpotqa.jsonl", 2)):
    exemplars = load_exemplars(name)
    assert len(exemplars) >= 4
    assert all(len(e.passages) == len(e.hints) == hops and e.reasoning for e in exemplars)
