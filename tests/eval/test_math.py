"""Math answer extraction, normalisation and equivalence, on cases worked by hand.

Each expectation is derived from the rules in the `align_jax.eval.math` docstring (last
top-level box, else last `Answer:` line; normalisation rules 1-12; string equality, else
math-verify both ways round), not from earlier output.
"""

import pytest

from align_jax.eval import answers_equal, extract_answer
from align_jax.eval import math as math_eval
from align_jax.eval.math import normalize_answer


@pytest.mark.parametrize("text,answer", [
    (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),            # nested braces
    (r"First \boxed{3}, then \boxed{4}.", "4"),                     # the last box wins
    (r"The result is $\boxed 5$", "5"),                             # brace-less, up to `$`
    (r"Hence \fbox{3}", "3"),
    (r"The set is $\boxed{\{1, 2\}}$", r"\{1, 2\}"),               # \{ \} are not braces
    (r"$\boxed{\boxed{8}}$", "8"),                                  # a box in a box
    (r"\boxed{2} and then an empty \boxed{}", "2"),                 # empty boxes skipped
    (r"\boxed{3} but a cut-off \boxed{4", "3"),                     # unclosed: ignored
    (r"Answer: 5 \boxed{6}", "6"),                                  # a box beats a label
    ("We add them.\nAnswer: 7", "7"),
    ("answer: 3\nLet me check again.\nAnswer: 7.", "7"),            # the last, period off
    ("Therefore, the answer is $12$.", "12"),
    ("**Final Answer:** 9", "9"),
    ("Final Answer: The final answer is $7$. I hope it is correct.", "7"),  # $...$ only
    ("Answer:\n\\(42\\)", "42"),                                   # next line, \( \) off
    ("No final answer here.", None),
    ("", None),
    ("Answer:   ", None),
])
def test_extract_answer(text, answer):
  assert extract_answer(text) == answer


@pytest.mark.parametrize("answer,normalised", [
    # fractions (rules 2, 9, 10)
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\frac1{2}", r"\frac{1}{2}"),
    (r"\tfrac 1 2", r"\frac{1}{2}"),
    ("1/2", r"\frac{1}{2}"),
    ("-3/4", r"-\frac{3}{4}"),
    ("(1/2, 3)", r"(\frac{1}{2},3)"),
    ("2^1/2", "2^1/2"),                       # not a whole item: left alone
    (r"\frac\pi2", r"\frac{\pi}{2}"),
    (r"\frac{\sqrt2}{2}", r"\frac{\sqrt{2}}{2}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"\sqrt[3]8", r"\sqrt[3]{8}"),
    # delimiters and spacing (rules 2, 3, 7)
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"\left\{ 1, 2 \right\}", r"\{1,2\}"),
    (r"\lbrace 1,2\rbrace", r"\{1,2\}"),
    ("{1,2}", "{1,2}"),                       # grouping braces stay distinct from \{ \}
    (r"1\!000", "1000"),
    (r"3\!\cdot\! 4", r"3\cdot4"),
    (r"\frac{1}{2}\,x", r"\frac{1}{2}x"),
    (r"2 \pi r", r"2\pi r"),                  # the space after \pi is kept
    # degrees, percent, units (rules 4, 5, 6)
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    ("90 degrees", "90"),
    (r"50\%", "50"),
    ("50%", "50"),
    (r"5\text{ cm}", "5"),
    (r"10\text{ cm}^2", "10"),
    (r"5\mbox{ inches}", "5"),
    ("5 cm", "5"),
    ("12 dollars", "12"),
    ("5m", "5m"),                             # single letters are not unit words
    (r"\text{(A)}", "(A)"),
    (r"\text{no solution}", "nosolution"),
    # leading variable (rule 8)
    ("x = 3", "3"),
    ("k =5", "5"),
    ("x_1=3", "3"),
    ("x=y=3", "x=y=3"),                       # another `=`: kept
    # thousands, decimals (rules 1, 11, 12)
    ("1,000", "1000"),
    ("1,000,000", "1000000"),
    (r"\$1,000", "1000"),
    ("1,00", "1,00"),                         # not groups of three
    ("(1,000)", "(1,000)"),                   # a tuple, not a number
    ("2.0", "2"),
    ("2.50", "2.5"),
    (".5", "0.5"),
    ("0.5", "0.5"),
    ("-.50", "-0.5"),
    ("1.05", "1.05"),
    ("7.", "7"),
])
def test_normalize_answer(answer, normalised):
  assert normalize_answer(answer) == normalised


@pytest.mark.parametrize("a,b,equal", [
    (r"\dfrac{3}{4}", r"\frac34", True),      # both \frac{3}{4}
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("10", "10.0", True),
    ("1000", "1,000", True),
    (r"\frac{1}{2}", "1/2", True),
    (".5", "0.5", True),
    ("x = 3", "3", True),
    (r"5\text{ cm}", "5", True),
    ("3", "4", False),
    (r"\{1,2\}", r"\{1,3\}", False),
])
def test_answers_equal(a, b, equal):
  assert answers_equal(a, b) is equal
  assert answers_equal(b, a) is equal


@pytest.mark.parametrize("a,b", [
    (r"\frac{1}{2}", "0.5"),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
    ("x+1", "1+x"),
])
def test_answers_equal_through_math_verify(a, b):
  assert normalize_answer(a) != normalize_answer(b)  # the strings differ ...
  assert answers_equal(a, b)                         # ... the values do not
  assert answers_equal(b, a)


@pytest.mark.parametrize("a,b", [
    (None, "1"), ("1", None), (None, None), ("", "1"), ("  ", "  "), ("$$", "$$"),
])
def test_missing_answers_are_not_equal(a, b):
  assert not answers_equal(a, b)


def test_extracted_answer_against_gold():
  solution = r"Adding, we get $\frac{2}{4} = \boxed{\dfrac{1}{2}}$."
  assert answers_equal(extract_answer(solution), "0.5")
  assert not answers_equal(extract_answer("no answer at all"), "0.5")


def test_math_verify_failure_is_not_equal(monkeypatch):
  import math_verify

  def fail(*args, **kwargs):
    raise RuntimeError("parser broke")

  monkeypatch.setattr(math_verify, "parse", fail)
  assert not answers_equal(r"\frac{1}{2}", "0.5")
  assert answers_equal("0.50", ".5")  # equal as strings: math-verify not needed


def test_long_answers_skip_the_symbolic_check():
  long = "+".join(["x"] * math_eval._MAX_SYMBOLIC_CHARS)  # noqa: SLF001
  assert not answers_equal(long, long[::-1] + "+0")


# --- the step format ---------------------------------------------------------------

def test_join_and_split_steps_round_trip_with_the_answer_block_as_one_step():
  from align_jax.eval.math import join_steps, process_steps, split_steps, step_end_offsets
  text = join_steps(["17 + 5 = 22 ", "22 * 3 = 66"], "66")
  assert text == "17 + 5 = 22\n\n22 * 3 = 66\n\n# Answer\n\n66"
  assert split_steps(text) == ["17 + 5 = 22", "22 * 3 = 66", "# Answer\n\n66"]
  assert process_steps(text) == ["17 + 5 = 22\n\n", "22 * 3 = 66\n\n", "# Answer\n\n66"]
  # Offsets just past each step's separator (not the answer block's own blank line).
  assert [text[:k] for k in step_end_offsets(text)] == ["17 + 5 = 22\n\n",
                                                        "17 + 5 = 22\n\n22 * 3 = 66\n\n"]
  # Runs of blank lines and blank-looking lines separate once; no answer block is fine.
  assert split_steps("a\n\n\n\nb\n \nc") == ["a", "b", "c"]
  assert step_end_offsets("a\n\n\n\nb\n \nc") == [3, 9]
  assert split_steps("") == [] and process_steps("") == []
  assert join_steps(["a"], None) == "a"


def test_the_answer_header_is_an_answer_when_there_is_no_box():
  assert extract_answer("2 + 2 = 4\n\n# Answer\n\n4") == "4"
  assert extract_answer("x\n\n# Answer\n\n\\frac{1}{2}\n\nmore text") == "\\frac{1}{2}"
  assert extract_answer("so \\boxed{5}\n\n# Answer\n\n6") == "5"  # a box comes first
  assert extract_answer("# Answer\n\n") is None
  assert extract_answer("The ## Answer section") is None
