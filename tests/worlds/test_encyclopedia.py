"""The encyclopedia world: determinism, consistency of facts, evidence, split, judge, files."""

import dataclasses
import json
import os

import pytest

from align_jax.worlds import (EncyclopediaConfig, build_world, judge, normalize_answer,
                              parse_passage_hint, passage_hint)


@pytest.fixture(scope="module")
def tiny():
  return build_world(EncyclopediaConfig.preset("tiny"))


@pytest.fixture(scope="module")
def default():
  return build_world(EncyclopediaConfig.preset("default"))


def states(text: str, value: str) -> bool:
  """Whether `value` occurs in `text` as whole words, after normalisation."""
  return f" {normalize_answer(value)} " in f" {normalize_answer(text)} "


def read_bytes(directory) -> dict[str, bytes]:
  return {name: open(os.path.join(directory, name), "rb").read()
          for name in ("articles.jsonl", "qa_train.jsonl", "qa_heldout.jsonl")}


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
  config = EncyclopediaConfig.preset("tiny", seed=3)
  build_world(config).to_jsonl(str(tmp_path / "a"))
  build_world(config).to_jsonl(str(tmp_path / "b"))
  build_world(dataclasses.replace(config, seed=4)).to_jsonl(str(tmp_path / "c"))
  a, b, c = (read_bytes(tmp_path / d) for d in "abc")
  assert a == b
  assert all(a[name] != c[name] for name in a)
  assert build_world(config).corpus_texts() != build_world(
      dataclasses.replace(config, seed=4)).corpus_texts()


def test_split_and_wording_options_leave_the_entities_unchanged():
  base = build_world(EncyclopediaConfig.preset("tiny"))
  other = build_world(EncyclopediaConfig.preset("tiny", heldout_fraction=0.5, renderings=2,
                                                question_variants=3))
  assert base.entities == other.entities
  assert base.articles == other.articles
  assert base.splits != other.splits


def test_names_are_unique_and_made_up_words_are_never_reused(default):
  names = list(default.entities)
  assert len(names) == len(set(names)) == 100
  countries = {c.country for c in default.cities}
  rivers = {c.river for c in default.cities}
  words = ([w for p in default.people for w in p.name.split()]
           + [c.name for c in default.cities] + [k.name.split()[0] for k in default.companies]
           + sorted(countries) + sorted(rivers))
  assert len(words) == len(set(words))
  assert all(w.isalpha() and w[0].isupper() for w in words)


def test_entities_are_consistent(default):
  people = {p.name: p for p in default.people}
  for p in default.people:
    assert p.employer in default.entities and p.birth_city in default.entities
    if p.spouse:
      assert p.spouse != p.name and people[p.spouse].spouse == p.name
  founders = [k.founder for k in default.companies]
  assert len(set(founders)) == len(founders)
  for k in default.companies:
    assert k.founding_year >= people[k.founder].birth_year + 25
    assert k.headquarters in {c.name for c in default.cities}
  married = sum(p.spouse is not None for p in default.people)
  assert married == 2 * round(0.6 * 60 / 2)


def test_one_hop_answers_are_stated_in_every_evidence_paragraph(tiny, default):
  for world in (tiny, default):
    for qa in world.qa(hops=1):
      assert qa.evidence == qa.hop_evidence[0] and qa.evidence
      assert qa.evidence[0][0] == qa.entity  # the subject's own article first
      for location in qa.evidence:
        text = world.paragraph_text(*location)
        assert states(text, qa.answers[0]), (qa.question, qa.answers, text)
        assert states(text, qa.entity), (qa.question, text)


def test_two_hop_facts_are_stated_in_their_hop_evidence(default):
  pairs = default.qa(hops=2)
  assert pairs
  for qa in pairs:
    (subject, _, bridge), (bridge_again, _, value) = qa.facts
    assert subject == qa.entity and bridge_again == bridge and value == qa.answers[0]
    assert qa.entity in qa.question and bridge not in qa.question
    assert qa.hop_evidence[0][0][0] == subject and qa.hop_evidence[1][0][0] == bridge
    assert set(qa.evidence) == {loc for hop in qa.hop_evidence for loc in hop}
    for (s, _, v), locations in zip(qa.facts, qa.hop_evidence):
      for location in locations:
        text = default.paragraph_text(*location)
        assert states(text, s) and states(text, v), (qa.question, location, text)


def test_facts_are_repeated_across_articles(default):
  for k in default.companies:
    titles = {t for t, _, _ in default.evidence_for(k.name, "founder")}
    assert {k.name, k.founder} <= titles
    assert any(states(text, k.founder) for text in default.article(k.name).section("History"))
    career = " ".join(default.article(k.founder).section("Career"))
    assert states(career, k.name) and states(career, str(k.founding_year))
    assert k.headquarters in {t for t, _, _ in default.evidence_for(k.name, "headquarters")}
  for p in default.people:
    assert p.birth_city in {t for t, _, _ in default.evidence_for(p.name, "birth_city")}
    assert p.employer in {t for t, _, _ in default.evidence_for(p.name, "employer")}
    if p.spouse:
      personal = default.article(p.spouse).section("Personal life")
      assert any(states(text, p.name) for text in personal)


def test_without_cross_mentions_each_fact_lives_in_its_own_article():
  world = build_world(EncyclopediaConfig.preset("tiny", cross_mentions=False))
  for qa in world.qa(hops=1):
    titles = {t for t, _, _ in qa.evidence}
    if qa.relation == "spouse":
      assert titles == {qa.entity, qa.answers[0]}
    else:
      assert titles == {qa.entity}


def test_split_is_disjoint_and_heldout_pairs_need_heldout_facts(default):
  splits = default.splits
  assert set(splits) == set(default.entities)
  assert set(splits.values()) == {"train", "heldout"}
  heldout_people = sum(splits[p.name] == "heldout" for p in default.people)
  assert abs(heldout_people - 0.3 * 60) <= 1
  for p in default.people:
    if p.spouse:
      assert splits[p.name] == splits[p.spouse]
  train, heldout = default.qa("train"), default.qa("heldout")
  assert len(train) + len(heldout) == len(default.qa()) and train and heldout
  assert not {q.id for q in train} & {q.id for q in heldout}
  for qa in default.qa(hops=1):
    assert qa.split == splits[qa.entity]
  for qa in heldout:
    assert any(splits[s] == "heldout" for s, _, _ in qa.facts)
  for qa in train:
    assert all(splits[s] == "train" for s, _, _ in qa.facts)
  train_facts = {(s, r) for q in train for s, r, _ in q.facts}
  heldout_facts = {(s, r) for q in default.qa("heldout", hops=1) for s, r, _ in q.facts}
  assert not train_facts & heldout_facts
  # Every article, held-out entities' included, is in the corpus.
  corpus = default.corpus_texts()
  assert len(corpus) == len(default.entities)
  assert {text.split("\n", 1)[0] for text in corpus} == {f"= {n} =" for n in default.entities}


def test_question_variants_differ_in_wording():
  world = build_world(EncyclopediaConfig.preset("tiny", question_variants=3))
  by_fact = {}
  for qa in world.qa():
    by_fact.setdefault((qa.entity, qa.relation), []).append(qa)
  for pairs in by_fact.values():
    assert [q.variant for q in pairs] == [0, 1, 2]
    assert len({q.question for q in pairs}) == 3
    assert len({(q.answers, q.evidence, q.split) for q in pairs}) == 1
  assert len(world.qa(variant=0)) == len(by_fact)


def test_normalize_answer_and_judge(tiny):
  assert normalize_answer("  The Vesk  River! ") == "vesk river"
  assert normalize_answer("An engineer.") == "engineer"
  # The world judges under the "squad" convention, which deletes only ASCII punctuation
  # (as the SQuAD/HotpotQA scripts do): the comma and period go, the em dash stays.
  assert normalize_answer("Kelvar—Systems, Inc.") == "kelvar—systems inc"
  assert normalize_answer("Kelvar-Systems") == "kelvarsystems"  # ASCII hyphen deleted
  qa = next(q for q in tiny.qa(hops=1) if q.relation == "birth_city")
  city = qa.answers[0]
  assert judge(qa, city) and tiny.judge(qa, city)
  assert judge(qa, city.upper() + ".")
  assert judge(qa, f"the {city.lower()}")
  assert judge(qa, f"  {city} \n")
  assert not judge(qa, f"{city} city hall")
  assert not judge(qa, next(c.name for c in tiny.cities if c.name != city))
  assert not judge(qa, "") and not judge(qa, None) and not judge(qa, "the")
  river = next(q for q in tiny.qa(hops=1) if q.relation == "river")
  assert judge(river, f"The {river.answers[0]} river") and judge(river, river.answers[0])


def test_passage_hints(tiny):
  title, section, k = tiny.qa(hops=1)[0].evidence[0]
  hint = passage_hint(title, section, k)
  assert hint == f"{title} — {section} — paragraph #{k + 1}"
  assert passage_hint(tiny.article(title), section, k) == hint
  assert parse_passage_hint(hint) == (title, section, k)
  assert parse_passage_hint("Orvane — Notable people — paragraph #2") == (
      "Orvane", "Notable people", 1)
  for bad in ("Orvane — History", "Orvane — History — paragraph #0", "Orvane - History - #1"):
    with pytest.raises(ValueError):
      parse_passage_hint(bad)
  for title, section, k, text in tiny.paragraphs():
    assert tiny.paragraph_text(*parse_passage_hint(passage_hint(title, section, k))) == text
  with pytest.raises(KeyError):
    tiny.paragraph_text(title, section, 99)


def test_to_jsonl_writes_records_and_refuses_to_overwrite(tmp_path, tiny):
  paths = tiny.to_jsonl(str(tmp_path / "out"))
  assert sorted(paths) == ["articles", "qa_heldout", "qa_train"]
  articles = [json.loads(line) for line in open(paths["articles"], encoding="utf-8")]
  assert [a["title"] for a in articles] == [a.title for a in tiny.articles]
  assert articles[0]["text"] == tiny.corpus_texts()[0]
  train = [json.loads(line) for line in open(paths["qa_train"], encoding="utf-8")]
  assert len(train) == len(tiny.qa("train")) and {q["split"] for q in train} == {"train"}
  assert train[0] == tiny.qa("train")[0].to_dict()
  before = read_bytes(tmp_path / "out")
  with pytest.raises(FileExistsError):
    tiny.to_jsonl(str(tmp_path / "out"))
  assert read_bytes(tmp_path / "out") == before
  # One existing file is enough to refuse, and nothing else is written.
  (tmp_path / "partial").mkdir()
  (tmp_path / "partial" / "qa_heldout.jsonl").write_text("keep\n")
  with pytest.raises(FileExistsError):
    tiny.to_jsonl(str(tmp_path / "partial"))
  assert sorted(os.listdir(tmp_path / "partial")) == ["qa_heldout.jsonl"]


def test_corpus_format_and_paragraph_lengths(default):
  for article, text in zip(default.articles, default.corpus_texts()):
    blocks = text.split("\n\n")
    assert blocks[0] == f"= {article.title} ="
    expected = []
    for name, paragraphs in article.sections:
      expected += [f"== {name} =="] + list(paragraphs)
    assert blocks[1:] == expected
    assert not text.endswith("\n")
  for _, _, _, text in default.paragraphs():
    assert "\n" not in text and text == text.strip()
    assert 5 <= len(text.split()) <= 50


def test_extra_renderings_word_the_same_facts_differently():
  world = build_world(EncyclopediaConfig.preset("tiny", renderings=2))
  texts = world.corpus_texts()
  assert len(texts) == 2 * len(world.articles)
  assert texts[:len(world.articles)] == [a.text() for a in world.articles]
  second = {a.title: a for a in world._render(1)}
  assert any(second[a.title] != a for a in world.articles)
  for qa in world.qa(hops=1):
    for title, section, k in qa.evidence:
      assert states(second[title].paragraph(section, k), qa.answers[0])


def test_stats_add_up(tiny):
  stats = tiny.stats()
  assert stats["entities"]["total"] == sum(stats["entities"][k]
                                           for k in ("person", "city", "company")) == 28
  assert stats["articles"] == len(tiny.articles) == 28
  assert stats["paragraphs"] == len(list(tiny.paragraphs()))
  assert stats["words"] == sum(len(t.split()) for *_, t in tiny.paragraphs())
  qa = stats["qa"]
  assert qa["total"] == qa["train"]["total"] + qa["heldout"]["total"] == len(tiny.qa())
  for split in ("train", "heldout"):
    assert qa[split]["total"] == qa[split]["1"] + qa[split]["2"] == len(tiny.qa(split))
  assert qa["train"]["1"] + qa["heldout"]["1"] == len(tiny.qa(hops=1))
  assert stats["heldout_entities"]["person"] == sum(
      tiny.split_of(p.name) == "heldout" for p in tiny.people)
  assert stats["corpus_characters"] == sum(len(t) for t in tiny.corpus_texts())


def test_presets_and_config_validation(default):
  assert EncyclopediaConfig.preset("default") == EncyclopediaConfig()
  assert EncyclopediaConfig.preset("tiny", seed=7).seed == 7
  assert len(default.people) == 60 and len(default.cities) == 20
  with pytest.raises(ValueError, match="unknown encyclopedia preset"):
    EncyclopediaConfig.preset("huge")
  with pytest.raises(ValueError, match="num_companies"):
    EncyclopediaConfig(num_people=4, num_companies=5)
  with pytest.raises(ValueError, match="heldout_fraction"):
    EncyclopediaConfig(heldout_fraction=1.0)
  with pytest.raises(ValueError, match="split must be"):
    default.qa("test")
  no_heldout = build_world(EncyclopediaConfig.preset("tiny", heldout_fraction=0.0))
  assert not no_heldout.qa("heldout") and no_heldout.qa("train")
