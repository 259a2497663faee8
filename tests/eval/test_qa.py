"""EM/F1 and the SQuAD normalisation on hand-worked cases."""

import pytest

from align_jax.eval import exact_match, f1_score, normalize_answer


@pytest.mark.parametrize("text,expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a  Cat,  an Apple ", "cat apple"),
    ("theatre", "theatre"),                       # 'the' only as a whole word
    ("Rock-and-Roll", "rockandroll"),
    ("Ça  va?", "ça va"),
])
def test_normalisation(text, expected):
  assert normalize_answer(text) == expected


def test_exact_match_against_any_gold():
  assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
  assert exact_match("Broncos.", ["Denver Broncos", "Broncos"]) == 1.0
  assert exact_match("Carolina Panthers", ["Denver Broncos"]) == 0.0
  assert exact_match(None, ["x"]) == 0.0


def test_f1_partial_overlap():
  # "Denver Broncos won" vs "Denver Broncos": precision 2/3, recall 1 -> 0.8.
  assert f1_score("Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
  assert f1_score("Santa Clara, California", ["Levi's Stadium", "Santa Clara"]) == \
      pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
  assert f1_score("nothing alike", ["Denver"]) == 0.0
  assert f1_score("the", ["a"]) == 1.0  # both normalise to empty
