"""RECITE's dataset readers on mock TFDS data and a tiny HotpotQA-format file."""

import json

import pytest
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


def test_recite_eval_job_on_a_hotpotqa_file_with_a_hugging_face_model(tmp_path):
  from align_jax import main as entry
  from hf_fixtures import save_tiny_llama
  model_dir = tmp_path / "hf"
  save_tiny_llama(model_dir, max_positions=2048)  # a near-character-level tokenizer
  dev = tmp_path / "dev.json"
  dev.write_text(json.dumps([{"_id": "a", "question": "Where is Quill Works?", "answer": "Usk"},
                             {"_id": "b", "question": "Who founded it?", "answer": "Ada"}]))
  workdir = tmp_path / "run"
  command = ["--gin_file=gin/methods/recite/hotpotqa.gin", f"--gin.WORKDIR='{workdir}'",
             f"--gin.CHECKPOINT='{model_dir}'", f"--gin.HOTPOTQA_DEV='{dev}'",
             "--gin.ReciteConfig.num_paths=2", "--gin.ReciteConfig.recitation_tokens=8",
             "--gin.ReciteConfig.answer_tokens=4", "--gin.ReciteConfig.reasoning_tokens=6",
             "--gin.recite_eval.path_counts=(1, 2)"]
  scores = entry.main(command)
  assert set(scores) == {"direct", "chain_of_thought", "multi_recite"}
  assert all(s["n"] == 2 for s in scores.values())
  assert [r["paths"] for r in scores["multi_recite"]["em_by_paths"]] == [1, 2]
  shares = scores["multi_recite"]["error_analysis"]
  assert abs(sum(shares.values()) - 1.0) < 1e-9
  rows = [json.loads(line) for line in (workdir / "multi_recite.jsonl").read_text().splitlines()]
  assert [len(r["paths"]) for r in rows] == [2, 2]
  assert json.loads((workdir / "scores.json").read_text()) == json.loads(json.dumps(scores))
  with pytest.raises(FileExistsError, match="already exists"):
    entry.main(command)


def test_exemplar_files_load():
  from align_jax.methods.recite.evaluate import load_exemplars
  for name, hops in (("natural_questions_open.jsonl", 1), ("trivia_qa.jsonl", 1),
                     ("hotpotqa.jsonl", 2)):
    exemplars = load_exemplars(name)
    assert len(exemplars) >= 4
    assert all(len(e.passages) == len(e.hints) == hops and e.reasoning for e in exemplars)
