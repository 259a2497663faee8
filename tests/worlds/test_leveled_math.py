"""The leveled math world: levels, splits and the exact checkers, on hand-worked cases."""

import dataclasses

import pytest

from align_jax.worlds.leveled_math import (LeveledMathConfig, Problem, build_world, check_answer,
                                           check_steps, parse_question)

PROBLEM = Problem(17, (("+", 5), ("*", 3), ("-", 8)), level=3)
GOLD = "17+5=22;*3-8\n\n22*3=66;-8\n\n66-8=58\n\n# Answer\n\n58"


def test_problem_question_and_gold_solution():
  assert PROBLEM.question == "Compute from left to right: 17+5*3-8"
  assert PROBLEM.steps() == ["17+5=22;*3-8", "22*3=66;-8", "66-8=58"]
  assert PROBLEM.solution() == GOLD
  assert PROBLEM.answer == 58
  assert parse_question(PROBLEM.question, 3) == PROBLEM


@pytest.mark.parametrize("solution,labels,correct", [
    (GOLD, [True, True, True, True], True),
    # A slip of arithmetic in step 2: it and every later step are wrong, even the
    # right-looking step 3.
    ("17+5=22;*3-8\n\n22*3=67;-8\n\n67-8=59\n\n# Answer\n\n59",
     [True, False, False, False], False),
    # Right arithmetic on the wrong operand (not the problem's next operation).
    ("17+5=22;*3-8\n\n22*4=88;-8\n\n88-8=80\n\n# Answer\n\n80",
     [True, False, False, False], False),
    # The operations still to do miscopied (-9 for -8): wrong from that step on.
    ("17+5=22;*3-9\n\n22*3=66;-9\n\n66-9=57\n\n# Answer\n\n57",
     [False, False, False, False], False),
    # An operation dropped while copying, so the answer comes early.
    ("17+5=22;*3\n\n22*3=66\n\n# Answer\n\n66", [False, False, False], False),
    # A step missing: the answer comes before the last operation is done.
    ("17+5=22;*3-8\n\n22*3=66;-8\n\n# Answer\n\n66", [True, True, False], False),
    # An extra step after the last operation.
    ("17+5=22;*3-8\n\n22*3=66;-8\n\n66-8=58\n\n58+1=59\n\n# Answer\n\n59",
     [True, True, True, False, False], False),
    # Right steps, wrong final answer: only the answer step is wrong.
    ("17+5=22;*3-8\n\n22*3=66;-8\n\n66-8=58\n\n# Answer\n\n57",
     [True, True, True, False], False),
    # Wrong steps that land on the right answer: the answer checker alone accepts it.
    ("17+5=23;*3-11\n\n23*3=69;-11\n\n69-11=58\n\n# Answer\n\n58",
     [False, False, False, False], True),
    ("no steps at all", [False], False),
    ("", [], False),
])
def test_checkers_label_steps_prm800k_style(solution, labels, correct):
  assert check_steps(PROBLEM, solution) == labels
  assert check_answer(PROBLEM, solution) is correct


def test_levels_grow_in_steps_and_numbers_and_splits_are_disjoint():
  config = LeveledMathConfig(seed=3, num_sft=60, num_label=20, num_rl=10, num_eval=10)
  world = build_world(config)
  assert {p.level for p in world.splits["sft"]} == {1, 2, 3}
  assert {p.level for p in world.splits["eval"]} == {1, 2, 3, 4, 5}
  assert len(world.splits["sft"]) == 180 and len(world.splits["eval"]) == 50
  questions = [p.question for ps in world.splits.values() for p in ps]
  assert len(questions) == len(set(questions))
  for p in (p for ps in world.splits.values() for p in ps):
    i = p.level - 1
    assert config.min_ops[i] <= len(p.ops) <= config.max_ops[i]
    assert all(0 <= v <= config.max_value for v in p.values())
    assert check_steps(p, p.solution()) == [True] * (len(p.ops) + 1)
  hard = [r for r in world.rl_records() if r["hard"]]
  assert hard and all(r["answer"] == "Unavailable" and r["level"] >= 4 for r in hard)
  assert all(r["answer"] != "Unavailable" for r in world.rl_records() if not r["hard"])
  # Deterministic in the seed.
  assert build_world(config).splits == world.splits


def test_test_records_are_apart_from_every_split_and_leave_the_splits_alone():
  config = LeveledMathConfig(seed=3, num_sft=60, num_label=20, num_rl=10, num_eval=10)
  world = build_world(config)
  before = {name: list(problems) for name, problems in world.splits.items()}
  test = world.test_records(30)
  assert world.splits == before == build_world(config).splits
  assert [sum(r["level"] == lv for r in test) for lv in range(1, 6)] == [30] * 5
  in_splits = {p.question for ps in world.splits.values() for p in ps}
  prompts = [r["prompt"] for r in test]
  assert len(set(prompts)) == 150 and not in_splits & set(prompts)
  # Records as `records` makes them: gold answers kept, hard levels marked; levels mixed.
  for r in test:
    problem = parse_question(r["prompt"], r["level"])
    assert r["answer"] == str(problem.answer) and r["hard"] == (r["level"] >= 4)
  assert {r["level"] for r in test[:20]} == {1, 2, 3, 4, 5}
  assert world.test_records(30) == test
  # Another seed's world draws other test questions.
  other = build_world(dataclasses.replace(config, seed=4)).test_records(30)
  assert {r["prompt"] for r in other} != set(prompts)
  with pytest.raises(ValueError, match="per_level"):
    world.test_records(0)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="easy_levels"):
    LeveledMathConfig(easy_levels=(0,))
  with pytest.raises(ValueError, match="one entry per level"):
    LeveledMathConfig(min_ops=(1, 2))
  with pytest.raises(ValueError, match="not a leveled-math question"):
    parse_question("What is 2 + 2?")
