"""Easy-to-Hard's readers on tiny files in the real MATH, MATH500 and PRM800K formats."""

import json

import pytest

from align_jax.methods.easy_to_hard import data


def _write_json(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def _write_lines(path, lines):
  path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line)
                            for line in lines) + "\n")


# --- MATH ----------------------------------------------------------------------------


@pytest.fixture
def math_dir(tmp_path):
  split = tmp_path / "MATH" / "train"
  _write_json(split / "algebra" / "10.json", {
      "problem": "Solve $2x = 1$.", "level": "Level ?", "type": "Algebra",
      "solution": "Divide by 2.\n\n\nSo $x = \\boxed{\\frac{1}{2}}$."})
  _write_json(split / "algebra" / "1.json", {
      "problem": "What is $x^2$ if $x = 2$?", "level": "Level 2", "type": "Algebra",
      "solution": "We have $x = 2$.\n \nSo $x^2 = \\boxed{4}$."})
  _write_json(split / "geometry" / "3.json", {
      "problem": "A 3 by 4 rectangle has what area?", "level": "Level 5",
      "type": "Geometry", "solution": "The area is\n$3 \\cdot 4 = \\boxed{12}$."})
  (split / "README.txt").write_text("not a subject")
  return split


def test_read_math_folder(math_dir):
  records = data.read_math(str(math_dir))
  assert records == [
      {"id": "algebra/1", "problem": "What is $x^2$ if $x = 2$?", "level": 2,
       "type": "Algebra", "solution": "We have $x = 2$.\n \nSo $x^2 = \\boxed{4}$.",
       "answer": "4"},
      {"id": "algebra/10", "problem": "Solve $2x = 1$.", "level": None, "type": "Algebra",
       "solution": "Divide by 2.\n\n\nSo $x = \\boxed{\\frac{1}{2}}$.",
       "answer": "\\frac{1}{2}"},
      {"id": "geometry/3", "problem": "A 3 by 4 rectangle has what area?", "level": 5,
       "type": "Geometry", "solution": "The area is\n$3 \\cdot 4 = \\boxed{12}$.",
       "answer": "12"}]


def test_read_math_jsonl_ids_are_line_numbers(tmp_path):
  path = tmp_path / "math.jsonl"
  _write_lines(path, [
      {"problem": "P1", "level": "Level 1", "type": "Prealgebra",
       "solution": "It is $\\boxed{3}$."},
      "",
      {"problem": "P2", "level": "Level 4", "type": "Number Theory",
       "solution": "Answer: 5"}])
  assert data.read_math(str(path)) == [
      {"id": "1", "problem": "P1", "level": 1, "type": "Prealgebra",
       "solution": "It is $\\boxed{3}$.", "answer": "3"},
      {"id": "3", "problem": "P2", "level": 4, "type": "Number Theory",
       "solution": "Answer: 5", "answer": "5"}]


def test_read_math_errors_name_file_line_and_key(tmp_path, math_dir):
  path = tmp_path / "math.jsonl"
  _write_lines(path, [{"problem": "P", "level": "Level 1", "type": "Algebra",
                       "solution": "$\\boxed{1}$"},
                      {"problem": "P", "level": "Level 1", "type": "Algebra"}])
  with pytest.raises(ValueError, match=r"math\.jsonl, line 2: missing key 'solution' "
                                       r"\(expected a string\)"):
    data.read_math(str(path))
  _write_lines(path, [{"problem": "P", "level": "hard", "type": "Algebra",
                       "solution": "$\\boxed{1}$"}])
  with pytest.raises(ValueError, match=r"line 1: key 'level' must be 'Level N'"):
    data.read_math(str(path))
  _write_lines(path, ['{"problem": "P", '])
  with pytest.raises(ValueError, match=r"math\.jsonl, line 1: not valid JSON"):
    data.read_math(str(path))
  _write_json(math_dir / "geometry" / "7.json", {
      "problem": "Q", "level": "Level 1", "type": "Geometry", "solution": "No box here."})
  with pytest.raises(ValueError) as error:
    data.read_math(str(math_dir))
  assert str(math_dir / "geometry" / "7.json") in str(error.value)
  assert "key 'solution' has no final answer" in str(error.value)


def test_read_math500(tmp_path):
  path = tmp_path / "test.jsonl"
  _write_lines(path, [{"problem": "Compute $1+1$.", "solution": "$1+1=\\boxed{2}$.",
                       "answer": "2", "subject": "Prealgebra", "level": 1,
                       "unique_id": "test/prealgebra/1.json"}])
  assert data.read_math500(str(path)) == [
      {"id": "test/prealgebra/1.json", "problem": "Compute $1+1$.", "level": 1,
       "type": "Prealgebra", "solution": "$1+1=\\boxed{2}$.", "answer": "2"}]
  _write_lines(path, [{"problem": "P", "solution": "S", "answer": "2",
                       "subject": "Algebra", "level": 3}])
  with pytest.raises(ValueError, match=r"test\.jsonl, line 1: missing key 'unique_id'"):
    data.read_math500(str(path))


def test_math_sft_record(math_dir):
  records = {r["id"]: r for r in data.read_math(str(math_dir))}
  assert data.math_sft_record(records["algebra/1"]) == {
      "prompt": "What is $x^2$ if $x = 2$?",
      "response": "We have $x = 2$.\n\nSo $x^2 = \\boxed{4}$.\n\n# Answer\n\n4",
      "answer": "4", "level": 2}
  assert data.math_sft_record(records["algebra/10"])["response"] == (
      "Divide by 2.\n\nSo $x = \\boxed{\\frac{1}{2}}$.\n\n# Answer\n\n\\frac{1}{2}")
  # No blank line: the whole solution is one step.
  assert data.math_sft_record(records["geometry/3"])["response"] == (
      "The area is\n$3 \\cdot 4 = \\boxed{12}$.\n\n# Answer\n\n12")
  with pytest.raises(ValueError, match="key 'answer'"):
    data.math_sft_record({**records["geometry/3"], "answer": None})


# --- PRM800K -------------------------------------------------------------------------


def _completion(text, rating):
  return {"text": text, "rating": rating, "flagged": None}


def _step(completions, chosen=None, human=None):
  return {"completions": completions, "human_completion": human,
          "chosen_completion": chosen}


def _line(problem, steps, finish_reason="solution", answer="4", qc=False, screening=False,
          pre_generated=None, generation=None):
  question = {"problem": problem, "ground_truth_solution": "...",
              "ground_truth_answer": answer}
  if pre_generated is not None:
    question.update(pre_generated_steps=pre_generated, pre_generated_answer="?",
                    pre_generated_verifier_score=0.5)
  return {"labeler": "abc", "timestamp": "2022-08-01T00:00:00", "generation": generation,
          "is_quality_control_question": qc, "is_initial_screening_question": screening,
          "question": question,
          "label": {"steps": steps, "total_time": 1000, "finish_reason": finish_reason}}


@pytest.fixture
def phase1(tmp_path):
  path = tmp_path / "phase1_train.jsonl"
  _write_lines(path, [
      # 1: every candidate of step 2 wrong; the labeler wrote the step.
      _line("What is $2x$ if $x = 2$?", [
          _step([_completion("Let $x = 2$.", 1)], chosen=0),
          _step([_completion("So $2x = 5$.", -1), _completion("So $2x = 3$.", -1)],
                human={"text": "Then $2x = 4$.", "rating": None, "source": "human",
                       "flagged": False}),
          _step([_completion("# Answer\n\n4", 1)], chosen=0)]),
      # 2: a wrong step in the middle ends the trajectory.
      _line("Add 1 and 1.", [
          _step([_completion("Hmm, addition.", 0), _completion("Off topic.", -1)], chosen=0),
          _step([_completion("1 + 1 = 3.", -1)]),
          _step([_completion("# Answer\n\n3", 1)], chosen=0)],
            finish_reason="found_error", answer="2"),
      # 3: a quality-control question.
      _line("QC problem", [_step([_completion("QC step.", 1)], chosen=0)], qc=True),
      "",
      # 5: an unrated step ends the trajectory before it.
      _line("Give up problem", [
          _step([_completion("First.", 1)], chosen=0),
          _step([_completion("Second.", None)], chosen=0)], finish_reason="give_up"),
      # 6: nothing labelled.
      _line("Unlabelled problem", [_step([_completion("Only.", None)], chosen=0)],
            finish_reason="give_up"),
      # 7: an initial-screening question.
      _line("Screening problem", [_step([_completion("Screen.", 0)], chosen=0)],
            screening=True, generation=-1)])
  return path


@pytest.fixture
def phase2(tmp_path):
  path = tmp_path / "phase2_train.jsonl"
  _write_lines(path, [
      _line("Phase 2 problem", [
          _step([_completion("Step A.", 0)], chosen=0),
          _step([_completion("Step B.", 1)], chosen=0),
          _step([_completion("Step C.\n\n# Answer\n\n7", 1)], chosen=0)],
            answer="7", pre_generated=["Step A.", "Step B.", "Step C.\n\n# Answer\n\n7"],
            generation=3),
      # Labelling stopped at the first error; alternatives were rated after it.
      _line("Phase 2 error", [
          _step([_completion("Step A.", 1)], chosen=0),
          _step([_completion("Alt B.", 0), _completion("Bad B.", -1),
                 _completion("Alt B2.", 1)])],
            finish_reason="found_error", answer="7",
            pre_generated=["Step A.", "Bad B.", "Step C.\n\n# Answer\n\n8"], generation=3)])
  return path


def test_read_prm800k_phase1(phase1):
  records, stats = data.read_prm800k_with_stats(str(phase1))
  assert records == [
      {"prompt": "What is $2x$ if $x = 2$?",
       "steps": ["Let $x = 2$.\n\n", "Then $2x = 4$.\n\n", "# Answer\n\n4"],
       "labels": [1, 1, 1], "answer": "4", "finish_reason": "solution",
       "source": "phase1_train.jsonl:1"},
      {"prompt": "Add 1 and 1.", "steps": ["Hmm, addition.\n\n", "1 + 1 = 3."],
       "labels": [1, 0], "answer": "2", "finish_reason": "found_error",
       "source": "phase1_train.jsonl:2"},
      {"prompt": "Give up problem", "steps": ["First."], "labels": [1], "answer": "4",
       "finish_reason": "give_up", "source": "phase1_train.jsonl:5"}]
  assert stats == {"lines": 6, "records": 3, "quality_control": 1, "initial_screening": 1,
                   "no_labelled_step": 1}
  assert data.read_prm800k(str(phase1)) == records


def test_read_prm800k_includes_quality_control_when_asked(phase1):
  records, stats = data.read_prm800k_with_stats(str(phase1), include_quality_control=True)
  assert [r["source"] for r in records] == [
      "phase1_train.jsonl:1", "phase1_train.jsonl:2", "phase1_train.jsonl:3",
      "phase1_train.jsonl:5", "phase1_train.jsonl:7"]
  assert records[2]["steps"] == ["QC step."] and records[4]["labels"] == [1]
  assert stats["quality_control"] == stats["initial_screening"] == 0


def test_read_prm800k_phase2_follows_the_pre_generated_step(phase2):
  assert data.read_prm800k(str(phase2)) == [
      {"prompt": "Phase 2 problem",
       "steps": ["Step A.\n\n", "Step B.\n\n", "Step C.\n\n# Answer\n\n7"],
       "labels": [1, 1, 1], "answer": "7", "finish_reason": "solution",
       "source": "phase2_train.jsonl:1"},
      {"prompt": "Phase 2 error", "steps": ["Step A.\n\n", "Bad B."], "labels": [1, 0],
       "answer": "7", "finish_reason": "found_error", "source": "phase2_train.jsonl:2"}]


def test_prm800k_sft_records(phase1, phase2):
  records = data.read_prm800k(str(phase1)) + data.read_prm800k(str(phase2))
  assert data.prm800k_sft_records(records) == [
      {"prompt": "What is $2x$ if $x = 2$?",
       "response": "Let $x = 2$.\n\nThen $2x = 4$.\n\n# Answer\n\n4", "answer": "4"},
      {"prompt": "Phase 2 problem",
       "response": "Step A.\n\nStep B.\n\nStep C.\n\n# Answer\n\n7", "answer": "7"}]
  # The response is what the shared step format writes.
  from align_jax.eval.math import join_steps
  assert data.prm800k_sft_records(records)[0]["response"] == join_steps(
      ["Let $x = 2$.", "Then $2x = 4$."], "4")


def test_read_prm800k_errors_name_file_line_and_key(tmp_path):
  path = tmp_path / "phase2_test.jsonl"
  good = _line("P", [_step([_completion("S.", 1)], chosen=0)])
  _write_lines(path, [good, '{"labeler": "x", "question": '])
  with pytest.raises(ValueError, match=r"phase2_test\.jsonl, line 2: not valid JSON"):
    data.read_prm800k(str(path))
  bad = json.loads(json.dumps(good))
  del bad["question"]["ground_truth_answer"]
  _write_lines(path, [good, good, bad])
  with pytest.raises(ValueError, match=r"phase2_test\.jsonl, line 3: missing key "
                                       r"'question\.ground_truth_answer'"):
    data.read_prm800k(str(path))
  bad = json.loads(json.dumps(good))
  bad["label"]["steps"][0]["completions"][0]["rating"] = 2
  _write_lines(path, [bad])
  with pytest.raises(ValueError, match=r"line 1: key 'label\.steps\[0\]\.completions\[0\]"
                                       r"\.rating' must be -1, 0, 1 or null, got 2"):
    data.read_prm800k(str(path))
  bad = json.loads(json.dumps(good))
  bad["label"]["steps"][0]["chosen_completion"] = 4
  _write_lines(path, [bad])
  with pytest.raises(ValueError, match=r"'label\.steps\[0\]\.chosen_completion' must be "
                                       r"null or an index into the 1 completions"):
    data.read_prm800k(str(path))


# --- levels --------------------------------------------------------------------------


def test_attach_levels_and_by_levels(math_dir):
  math = data.read_math(str(math_dir))
  prm = [{"prompt": "What is  $x^2$\nif $x = 2$? ", "steps": ["a"], "labels": [1]},
         {"prompt": "Solve $2x = 1$.", "steps": ["b"], "labels": [0]},
         {"prompt": "A problem not in MATH.", "steps": ["c"], "labels": [1]}]
  leveled = data.attach_levels(prm, math)
  assert [(r["level"], r["type"]) for r in leveled] == [
      (2, "Algebra"), (None, "Algebra"), (None, None)]
  assert leveled[0]["steps"] == ["a"] and "level" not in prm[0]
  assert data.by_levels(leveled, [1, 2, 3]) == [leveled[0]]
  assert data.by_levels(math, range(4, 6)) == [math[2]]
  assert [r["id"] for r in data.by_levels(math, [None])] == ["algebra/10"]


def test_read_prm800k_step_with_no_chosen_candidate(tmp_path):
  path = tmp_path / "phase1_test.jsonl"
  _write_lines(path, [
      # Several candidates, none chosen, no pre-generated steps: the first one rated -1.
      _line("P1", [_step([_completion("Good.", 1)], chosen=0),
                   _step([_completion("Fine.", 0), _completion("Wrong.", -1),
                          _completion("Also wrong.", -1)])], finish_reason="give_up"),
      # ... and with no -1 among them, the trajectory ends before the step.
      _line("P2", [_step([_completion("Good.", 1)], chosen=0),
                   _step([_completion("Fine.", 0), _completion("Great.", 1)])],
            finish_reason="give_up"),
      # A human completion given as a plain string.
      _line("P3", [_step([_completion("Bad.", -1)], human="Human step.")])])
  records = data.read_prm800k(str(path))
  assert [(r["steps"], r["labels"]) for r in records] == [
      (["Good.\n\n", "Wrong."], [1, 0]), (["Good."], [1]), (["Human step."], [1])]
