"""RECITE's pure logic: prompts, the vote, hint deduplication, the error analysis."""

import pytest

from align_jax.methods.recite import analysis, prompts
from align_jax.methods.recite.analysis import Path, QuestionResult

EXEMPLARS = [
    prompts.Exemplar("Where was Ada Vell born?", "Norbury",
                     passages=("Ada Vell was born in Norbury in 1901.",),
                     hints=("Ada Vell — Early life — paragraph #1",),
                     reasoning="Ada Vell's article says she was born in Norbury."),
    prompts.Exemplar("Who founded Quill Works?", "Ada Vell",
                     passages=("Quill Works was founded by Ada Vell.\nIt makes pens.",),
                     hints=("Quill Works — History — paragraph #2",),
                     reasoning="Quill Works' history names its founder, Ada Vell."),
]


def test_direct_and_recite_prompts_place_exemplars_then_the_open_query():
  direct = prompts.direct_prompt(EXEMPLARS, "Where was Bo Tarn born?")
  assert direct == ("Question: Where was Ada Vell born?\nAnswer: Norbury\n\n"
                    "Question: Who founded Quill Works?\nAnswer: Ada Vell\n\n"
                    "Question: Where was Bo Tarn born?\nAnswer:")
  recite = prompts.recite_prompt(EXEMPLARS, "Where was Bo Tarn born?")
  # Passages stay on one line, so a blank line can end a recitation.
  assert "Recitation: Quill Works was founded by Ada Vell. It makes pens.\n\n" in recite
  assert recite.endswith("Question: Where was Bo Tarn born?\nRecitation:")


def test_answer_prompt_paper_layout_prepends_the_recitation_to_plain_exemplars():
  text = prompts.answer_prompt(EXEMPLARS, ["Bo Tarn was born in Usk."], "Where was Bo Tarn born?")
  assert text == ("Recitation: Bo Tarn was born in Usk.\n\n"
                  "Question: Where was Ada Vell born?\nAnswer: Norbury\n\n"
                  "Question: Who founded Quill Works?\nAnswer: Ada Vell\n\n"
                  "Question: Where was Bo Tarn born?\nAnswer:")
  two = prompts.answer_prompt(EXEMPLARS, ["p one", "p two"], "q?")
  assert two.startswith("Recitation 1: p one\nRecitation 2: p two\n\nQuestion: Where was")
  assert two.endswith("\n\nQuestion: q?\nAnswer:")
  # Plain exemplars: the paper layout needs no exemplar passages.
  bare = [prompts.Exemplar("Where was Ada Vell born?", "Norbury")]
  assert prompts.answer_prompt(bare, ["p"], "q?") == (
      "Recitation: p\n\nQuestion: Where was Ada Vell born?\nAnswer: Norbury\n\n"
      "Question: q?\nAnswer:")
  with pytest.raises(ValueError, match="unknown answer layout 'side'"):
    prompts.answer_prompt(EXEMPLARS, ["p"], "q?", "side")


def test_answer_prompt_reading_layout_gives_every_exemplar_its_passage():
  text = prompts.answer_prompt(EXEMPLARS, ["Bo Tarn was born in Usk."], "Where was Bo Tarn born?",
                               "reading")
  blocks = text.split("\n\n")
  assert blocks[0] == ("Recitation: Ada Vell was born in Norbury in 1901.\n"
                       "Question: Where was Ada Vell born?\nAnswer: Norbury")
  assert blocks[-1] == ("Recitation: Bo Tarn was born in Usk.\nQuestion: Where was Bo Tarn "
                        "born?\nAnswer:")
  two = prompts.answer_prompt(EXEMPLARS, ["p one", "p two"], "q?", "reading")
  assert two.endswith("Recitation 1: p one\nRecitation 2: p two\nQuestion: q?\nAnswer:")


def test_multi_recitation_prompt_and_its_parsing():
  two_hop = [prompts.Exemplar("Where was the founder of Quill Works born?", "Norbury",
                              passages=("Quill Works was founded by Ada Vell.",
                                        "Ada Vell was born in Norbury."))]
  text = prompts.multi_recite_prompt(two_hop, "q?")
  assert ("Recitation 1: Quill Works was founded by Ada Vell.\n"
          "Recitation 2: Ada Vell was born in Norbury.") in text
  assert text.endswith("Question: q?\nRecitation 1:")
  assert prompts.split_recitations(" first passage.\nRecitation 2: second one.\n\nQuestion: x") \
      == ["first passage.", "second one."]
  # What the exemplar's block holds after 'Recitation 1:', and back.
  joined = prompts.join_recitations(two_hop[0].passages)
  assert joined == ("Quill Works was founded by Ada Vell.\n"
                    "Recitation 2: Ada Vell was born in Norbury.")
  assert text.split("Recitation 1: ", 1)[1].startswith(joined)
  assert prompts.split_recitations(joined) == list(two_hop[0].passages)


def test_hint_prompts_and_deduplication():
  assert prompts.hint_prompt(EXEMPLARS, "q?").endswith("Question: q?\nHint:")
  assert prompts.passage_prompt(EXEMPLARS, "Bo Tarn — Career — paragraph #1").endswith(
      "Hint: Bo Tarn — Career — paragraph #1\nRecitation:")
  # Distinct after collapsing whitespace, empty dropped, most sampled first, ties in
  # first-seen order.
  assert prompts.rank_hints(["A — C — paragraph #1", "A — B — paragraph #1", "",
                             " A —  B — paragraph #1", "A — D — paragraph #2",
                             "A — D — paragraph #2"]) == [
      "A — B — paragraph #1", "A — D — paragraph #2", "A — C — paragraph #1"]


def test_question_generation_and_hinted_recitation_prompts():
  text = prompts.question_prompt(EXEMPLARS[:1], "Bo Tarn was born in Usk.")
  assert text == ("Recitation: Ada Vell was born in Norbury in 1901.\n"
                  "Question: Where was Ada Vell born?\nAnswer: Norbury\n\n"
                  "Recitation: Bo Tarn was born in Usk.\nQuestion:")
  open_hint = prompts.hinted_recite_prompt(EXEMPLARS[:1], "Where was Bo Tarn born?")
  assert open_hint == ("Question: Where was Ada Vell born?\n"
                       "Hint: Ada Vell — Early life — paragraph #1\n"
                       "Recitation: Ada Vell was born in Norbury in 1901.\n\n"
                       "Question: Where was Bo Tarn born?\nHint:")
  hint = "Bo Tarn — Early life — paragraph #1"
  given = prompts.hinted_recite_prompt([], "Where was Bo Tarn born?", hint)
  assert given == f"Question: Where was Bo Tarn born?\nHint: {hint}\nRecitation:"
  # A fine-tuning example is that prompt completed with the passage (on one line).
  assert prompts.hinted_recitation_document([], "Where was Bo Tarn born?", hint,
                                            "Bo Tarn was born\nin Usk.") == (
      given + " Bo Tarn was born in Usk.")


def test_exemplars_must_have_what_a_prompt_needs():
  with pytest.raises(ValueError, match="without reasoning"):
    prompts.chain_of_thought_prompt([prompts.Exemplar("q", "a")], "q2")
  with pytest.raises(ValueError, match="2 hints for 1 passages"):
    prompts.Exemplar("q", "a", passages=("p",), hints=("h1", "h2"))


def test_vote_skips_empty_answers_groups_spellings_and_breaks_ties_to_shorter():
  assert analysis.vote(["", "Norbury", "  ", "the Norbury", "Usk"], "squad") == "Norbury"
  assert analysis.vote(["Upper Usk", "Usk"], "squad") == "Usk"          # tie: shorter wins
  assert analysis.vote(["Usk", "Upper Usk", "Upper Usk"], "squad") == "Upper Usk"
  assert analysis.vote(["", None], "squad") is None
  # The convention decides what counts as the same answer.
  assert analysis.vote(["well-known", "well known", "wellknown"], "squad") == "well-known"
  assert analysis.vote(["wellknown", "well-known", "well known"], "trivia_qa") == "well-known"


def test_a_final_answer_read_from_all_paths_overrides_the_vote():
  result = QuestionResult("q", ("Usk",), [Path(("p1",), ""), Path(("born in Usk",), "")],
                          final="Usk", convention="squad")
  assert result.prediction == "Usk" and result.exact_match() == 1.0
  assert analysis.error_class(result) == "hits@majority"
  wrong = QuestionResult("q", ("Usk",), [Path(("born in Usk",), "")], final="Ely",
                         convention="squad")
  assert analysis.error_class(wrong) == "hits@k recitations"
  assert QuestionResult("q", ("Usk",), [], final="", convention="squad").prediction is None
  # Paths read together have no answers of their own: the per-path table skips them.
  assert sum(analysis.path_table([result, wrong]).values()) == 0


def _result(answers, paths):
  return QuestionResult("q", tuple(answers), [Path(tuple(r), a) for r, a in paths],
                        convention="squad")


def test_error_analysis_classes_add_up_and_count_by_hand():
  results = [
      _result(["Usk"], [(["born in Usk"], "Usk"), (["x"], "Usk"), (["y"], "Ely")]),  # majority
      _result(["Usk"], [(["Usk"], "Usk"), (["z"], "Ely"), (["w"], "Ely")]),           # k paths
      _result(["Usk"], [(["born in Usk."], "Ely"), (["v"], "")]),                    # recited
      _result(["Usk"], [(["Uskmouth"], "Ely")]),                                     # not recited
  ]
  shares = analysis.error_analysis(results)
  assert shares == {"hits@majority": 0.25, "hits@k paths": 0.25, "hits@k recitations": 0.25,
                    "not recited": 0.25}
  assert sum(shares.values()) == 1.0
  table = analysis.path_table(results)
  # 9 paths: recited & right 2, recited & wrong 1, not recited & right 1, else 5.
  assert table == {"recited=True,correct=True": 2 / 9, "recited=True,correct=False": 1 / 9,
                   "recited=False,correct=True": 1 / 9, "recited=False,correct=False": 5 / 9}
  assert analysis.scores(results)["em"] == 0.25


def test_em_by_paths_with_every_path_equals_the_full_vote():
  results = [_result(["Usk"], [([""], "Usk"), ([""], "Ely"), ([""], "Usk")]),
             _result(["Ely"], [([""], "Ely"), ([""], "Usk"), ([""], "Usk")])]
  rows = analysis.em_by_paths(results, [1, 3], resamples=5, seed=0)
  assert rows[1] == {"paths": 3, "em_mean": analysis.scores(results)["em"], "em_std": 0.0}
  assert rows[0]["paths"] == 1
  # One path: a question is right as often as its paths are (2/3 and 1/3): 0.5 on average.
  one = analysis.em_by_paths(results, [1], resamples=400, seed=0)[0]
  assert abs(one["em_mean"] - 0.5) < 0.06 and one["em_std"] > 0
