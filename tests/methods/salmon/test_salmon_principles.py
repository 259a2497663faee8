"""SALMON's principle files: the project's own and a user's, with errors that name the line."""

import json

import pytest

from align_jax.data.jsonl import JsonlError
from align_jax.methods.salmon.principles import load_principles


def test_the_project_principles_have_both_definitions_and_the_rl_interventions():
  principles = load_principles()
  train = [p for p in principles if p.use == "train"]
  rl = [p for p in principles if p.use == "rl"]
  assert len(train) == 16 and [p.name for p in rl] == ["concrete", "modest", "no lecturing"]
  assert len({p.name for p in principles}) == len(principles)
  for p in principles:
    assert p.principle.positive != p.principle.negative
    assert p.principle.positive.endswith(".") and p.principle.negative.endswith(".")
  assert {k for p in principles for k in p.kinds} == {"reasoning", "red_team"}


def test_a_user_file_is_checked_line_by_line(tmp_path):
  path = tmp_path / "p.jsonl"
  good = {"name": "kind", "use": "train", "positive": "Be kind.", "negative": "Be rude."}
  path.write_text(json.dumps(good) + "\n")
  assert load_principles(str(path))[0].principle.negative == "Be rude."
  for bad, message in (({**good, "use": "both"}, r"line 2: key 'use' must be one of"),
                       ({**good, "negative": " "}, r"line 2: key 'negative' must be a non-empty"),
                       ({**good, "kinds": "x"}, r"line 2: key 'kinds' must be a list"),
                       (good, r"line 2: principle 'kind' appears twice")):
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(JsonlError, match=message):
      load_principles(str(path))
  path.write_text(json.dumps({**good, "use": "rl"}) + "\n")
  with pytest.raises(ValueError, match="no principle with use 'train'"):
    load_principles(str(path))
