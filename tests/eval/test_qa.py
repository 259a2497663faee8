"""EM/F1 under the "trivia_qa" and "squad" conventions, on cases worked by hand.

Each expectation is derived from the definitions in `align_jax.eval.qa` (lowercase;
trivia_qa turns ASCII punctuation and ‘ ’ ´ ` into spaces, squad deletes ASCII
punctuation only; articles out; whitespace collapsed), not from earlier output.
"""

import pytest

from align_jax.eval import CONVENTIONS, exact_match, f1, normalize_answer
from align_jax.eval import qa


def test_conventions():
  assert CONVENTIONS == ("trivia_qa", "squad") == qa.CONVENTIONS


# (text, trivia_qa normalisation, squad normalisation)
@pytest.mark.parametrize("text,trivia,squad", [
    ("well-known", "well known", "wellknown"),
    ("U.S.", "u s", "us"),
    ("AC/DC", "ac dc", "acdc"),
    ("snake_case", "snake case", "snakecase"),          # underscore is ASCII punctuation
    ("Levi’s Stadium", "levi s stadium", "levi’s stadium"),  # curly single quote
    ("Rock ‘n’ Roll", "rock n roll", "rock ‘n’ roll"),
    ("rock´n`roll", "rock n roll", "rock´nroll"),       # ´ is not ASCII; ` is
    ("“Hey Jude”", "“hey jude”", "“hey jude”"),         # curly double quotes kept by both
    ("1914–1918", "1914–1918", "1914–1918"),             # en dash kept by both
    ("Kelvar—Systems", "kelvar—systems", "kelvar—systems"),  # em dash kept by both
    ("1914-1918", "1914 1918", "19141918"),              # ASCII hyphen
    ("The Beatles", "beatles", "beatles"),
    ("an apple a day", "apple day", "apple day"),
    ("Theatre", "theatre", "theatre"),                   # 'the' only as a whole word
    ("A-ha", "ha", "aha"),       # trivia_qa splits off the article 'a'; squad glues it on
    ("Café Müller", "café müller", "café müller"),
    ("ÉCOLE", "école", "école"),
    ("  New\tYork\n\n City  ", "new york city", "new york city"),
    ("", "", ""),
])
def test_normalisation(text, trivia, squad):
  assert normalize_answer(text, "trivia_qa") == trivia
  assert normalize_answer(text, "squad") == squad


# (prediction, gold, trivia_qa EM, squad EM)
@pytest.mark.parametrize("prediction,gold,trivia,squad", [
    ("well-known", "well known", 1.0, 0.0),    # "well known" both / "wellknown" vs "well known"
    ("U.S.", "US", 0.0, 1.0),                  # "u s" vs "us" / "us" == "us"
    ("AC/DC", "ACDC", 0.0, 1.0),               # "ac dc" vs "acdc" / "acdc" == "acdc"
    ("AC/DC", "AC DC", 1.0, 0.0),              # "ac dc" == "ac dc" / "acdc" vs "ac dc"
    ("Levi’s Stadium", "Levi's Stadium", 1.0, 0.0),  # "levi s stadium" both / "levi’s" vs "levis"
    ("Rock ‘n’ Roll", "rock n roll", 1.0, 0.0),
    ("“Hey Jude”", "Hey Jude", 0.0, 0.0),      # curly double quotes survive both
    ("\"Hey Jude\"", "Hey Jude", 1.0, 1.0),    # ASCII double quotes do not
    ("1914–1918", "1914 1918", 0.0, 0.0),      # en dash kept by both
    ("1914—1918", "1914 1918", 0.0, 0.0),      # em dash kept by both
    ("1914-1918", "1914 1918", 1.0, 0.0),      # ASCII hyphen: space / deleted
    ("The Beatles", "beatles", 1.0, 1.0),
    ("Theatre", "atre", 0.0, 0.0),             # no article inside a word
    ("CAFÉ", "café", 1.0, 1.0),
    ("Paris\n", " paris\t", 1.0, 1.0),
])
def test_exact_match(prediction, gold, trivia, squad):
  assert exact_match(prediction, [gold], "trivia_qa") == trivia
  assert exact_match(prediction, [gold], "squad") == squad


def test_exact_match_takes_best_alias():
  golds = ["John F. Kennedy", "JFK"]
  for convention in CONVENTIONS:
    assert exact_match("jfk", golds, convention) == 1.0
    assert exact_match("John F Kennedy", golds, convention) == 1.0
    assert exact_match("Kennedy", golds, convention) == 0.0
  # Only one alias matches, and which one depends on the convention.
  assert exact_match("U.S.", ["United States", "U S"], "trivia_qa") == 1.0  # "u s"
  assert exact_match("U.S.", ["United States", "U S"], "squad") == 0.0      # "us" vs "u s"
  assert exact_match("U.S.", ["United States", "US"], "squad") == 1.0


def test_f1_partial_overlap():
  for convention in CONVENTIONS:
    # "new york city" vs "york": overlap 1, P = 1/3, R = 1 -> 2 * 1/3 / (4/3) = 0.5.
    assert f1("New York City", ["York"], convention) == pytest.approx(0.5)
    # Tokens count with multiplicity: "cat cat" vs "cat": P = 1/2, R = 1 -> 2/3.
    assert f1("the cat cat", ["a cat"], convention) == pytest.approx(2 / 3)
    assert f1("nothing alike", ["Denver"], convention) == 0.0
    assert f1("The Beatles", ["beatles"], convention) == 1.0


def test_f1_where_conventions_differ():
  # trivia_qa: "well known" == "well known" -> 1; squad: "wellknown" vs "well known" -> 0.
  assert f1("well-known", ["well known"], "trivia_qa") == 1.0
  assert f1("well-known", ["well known"], "squad") == 0.0
  # trivia_qa: "u s a" loses the article "a" -> "u s" vs "usa"; squad: "usa" == "usa".
  assert f1("U.S.A.", ["USA"], "trivia_qa") == 0.0
  assert f1("U.S.A.", ["USA"], "squad") == 1.0
  # trivia_qa: "levi s stadium" vs "stadium" -> P = 1/3, R = 1 -> 0.5;
  # squad: "levi’s stadium" vs "stadium" -> P = 1/2, R = 1 -> 2/3.
  assert f1("Levi’s Stadium", ["stadium"], "trivia_qa") == pytest.approx(0.5)
  assert f1("Levi’s Stadium", ["stadium"], "squad") == pytest.approx(2 / 3)


def test_f1_takes_best_alias():
  golds = ["John F. Kennedy", "Kennedy"]
  for convention in CONVENTIONS:
    # vs "john f kennedy": P = 2/2, R = 2/3 -> 0.8; vs "kennedy": P = 1/2, R = 1 -> 2/3.
    assert f1("John Kennedy", golds, convention) == pytest.approx(0.8)
    assert f1("John Kennedy", list(reversed(golds)), convention) == pytest.approx(0.8)


def test_hotpotqa_yes_no_rule_under_squad_only():
  # Prediction "yes" is special and differs from "yes it is": 0 under squad; under
  # trivia_qa plain token F1, P = 1, R = 1/3 -> 2 * 1/3 / (4/3) = 0.5.
  assert f1("yes", ["yes it is"], "squad") == 0.0
  assert f1("yes", ["yes it is"], "trivia_qa") == pytest.approx(0.5)
  # Gold "no" is special and differs from "no way": 0; trivia_qa P = 1/2, R = 1 -> 2/3.
  assert f1("No way", ["no"], "squad") == 0.0
  assert f1("No way", ["no"], "trivia_qa") == pytest.approx(2 / 3)
  assert f1("noanswer", ["no answer"], "squad") == 0.0
  # Equal after normalisation: the rule does not apply.
  assert f1("Yes.", ["yes"], "squad") == 1.0
  assert f1("noanswer", ["NoAnswer"], "squad") == 1.0
  # Best over aliases still applies.
  assert f1("yes", ["yes it is", "Yes!"], "squad") == 1.0


def test_empty_normalisation_edge_case():
  # As in the official scripts: no common token -> F1 0, even when both sides normalise
  # to nothing (while exact match compares the empty strings and gives 1).
  for convention in CONVENTIONS:
    assert f1("the", ["a"], convention) == 0.0
    assert f1("!!!", ["?"], convention) == 0.0
    assert f1("the", ["cat"], convention) == 0.0
    assert f1("cat", ["an"], convention) == 0.0
    assert exact_match("The", ["?"], convention) == 1.0


def test_none_prediction_scores_zero():
  for convention in CONVENTIONS:
    assert exact_match(None, ["x"], convention) == 0.0
    assert f1(None, ["x"], convention) == 0.0
    assert f1(None, [""], convention) == 0.0


def test_unknown_convention():
  for call in (lambda: normalize_answer("x", "nq"), lambda: exact_match("x", ["x"], "nq"),
               lambda: f1("x", ["x"], "nq"), lambda: exact_match(None, ["x"], "nq")):
    with pytest.raises(ValueError, match=r"'nq'.*'trivia_qa'.*'squad'"):
      call()


def test_convention_is_required():
  with pytest.raises(TypeError):
    normalize_answer("x")  # pylint: disable=no-value-for-parameter
  with pytest.raises(TypeError):
    exact_match("x", ["x"])  # pylint: disable=no-value-for-parameter
  with pytest.raises(TypeError):
    f1("x", ["x"])  # pylint: disable=no-value-for-parameter
