"""A seeded synthetic encyclopedia: fictional people, cities and companies.

The world is the testbed for recitation-augmented closed-book QA (RECITE). A tiny
model memorises the articles during pretraining, learns the question-answer format
on the QA pairs of *train* entities, and is evaluated on the QA pairs of *held-out*
entities, whose facts it has read only in the articles.

Entities and facts
  People: birth year, birth city, occupation, employer (a company) and, for some,
  a spouse (another person; the relation is symmetric). Cities: country, founding
  year, population size band, river. Companies: founding year, headquarters (a
  city), founder (a person; each person founds at most one company), industry.
  Countries and rivers are plain names, not entities. Names are made of syllables;
  every made-up word is used once in a world, so no name contains another (company
  names end in an ordinary word chosen by industry, such as 'Lines' or 'Press').

Articles
  One article per entity, titled with its name, made of sections of short
  paragraphs written in plain declarative sentences (no pronouns, so every sentence
  stands alone). Facts are repeated across articles as in a real encyclopedia: a
  person's article says where their employer is based and which company they
  founded, a city's article lists the people born there and the companies based
  there, a company's article names its founder and notable employees, and both
  spouses' articles state the marriage (with the other spouse's birth year and
  occupation). `cross_mentions=False` states every fact in its own article only (a
  marriage still appears in both spouses' articles). Sections are laid out from the facts alone; the wording
  of each sentence is drawn from a few templates, so extra *renderings* of an
  article (`renderings > 1`) state the same facts in the same paragraphs with other
  wording.

Corpus format (`corpus_texts()`, one string per article)::

  = Tomar Velisk =

  == Early life ==

  Tomar Velisk was born in Orvane in 1962. Orvane is a city in Veldia.

  == Career ==

  ...

  A title line `= Title =`, then per section a heading line `== Section ==` and its
  paragraphs; headings and paragraphs are separated by one blank line and no
  paragraph contains a line break, so a recitation can be cut at the first blank
  line. No trailing newline.

Paragraph addresses
  A paragraph is addressed by `(title, section, index)` with `index` counting from 0
  within its section. The passage hint shown to a model counts from 1:
  `passage_hint("Tomar Velisk", "Career", 0) == "Tomar Velisk — Career — paragraph #1"`,
  and `parse_passage_hint` inverts it.

QA pairs and the split
  Every fact gets one-hop questions; the chains listed in `_TWO_HOP` (a relation
  leading to a person, city or company, then one of its facts) get two-hop
  questions ("In which city was the founder of Kelvar Systems born?").
  Each fact yields `question_variants` pairs with different wording. Every fact
  has one owner, the entity it is about (a marriage is owned by both spouses).
  Each entity kind is split on its own: `heldout_fraction` of the people, of the
  cities and of the companies are held out; spouses are always held out together,
  so that no fact has owners on both sides. A pair is `train` when every fact it
  uses is owned by train entities and `heldout` otherwise: a one-hop pair takes its
  subject's split; a two-hop pair is held out when its subject or its bridge entity
  is. Train pairs never state a held-out fact (their answers may still *name* a
  held-out entity, e.g. a held-out birth city). All articles, held-out entities'
  included, belong to the pretraining corpus.

Randomness
  `numpy.random.default_rng` streams derived from `seed`: one for the entities, one
  for the split, one per rendering and one for the questions. The same config gives
  byte-identical output; changing `heldout_fraction`, `renderings` or
  `question_variants` leaves the entities unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from align_jax import fs
from align_jax.eval import qa as qa_metrics

Location = tuple[str, str, int]  # (title, section, paragraph index from 0)
Fact = tuple[str, str, str]      # (subject, relation, value)

HINT_SEPARATOR = " — "
TRAIN, HELDOUT = "train", "heldout"

# ---------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class EncyclopediaConfig:
  """What world to build.

  seed: drives every random choice. num_people / num_cities / num_companies /
    num_countries / num_rivers: sizes (each company has its own founder, so
    num_companies <= num_people). marriage_fraction: share of people with a spouse.
  heldout_fraction: share of the people, of the cities and of the companies whose
    QA pairs are held out from training. cross_mentions: restate facts in related
    articles (see the module docstring). renderings: differently worded copies of
    each article in `corpus_texts()` (the first one is `articles`).
    question_variants: question wordings per fact (1 to 3). list_size: most names
    listed in one paragraph of a city's or company's article.
  """
  seed: int = 0
  num_people: int = 60
  num_cities: int = 20
  num_companies: int = 20
  num_countries: int = 5
  num_rivers: int = 8
  marriage_fraction: float = 0.6
  heldout_fraction: float = 0.3
  cross_mentions: bool = True
  renderings: int = 1
  question_variants: int = 2
  list_size: int = 3

  PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
      "tiny": dict(num_people=16, num_cities=6, num_companies=6, num_countries=2,
                   num_rivers=3),
      "default": {},
  }

  def __post_init__(self):
    problems = []
    if self.num_people < 2:
      problems.append(f"num_people must be at least 2, got {self.num_people}")
    if not 1 <= self.num_companies <= self.num_people:
      problems.append(f"num_companies must be in [1, num_people={self.num_people}] (each "
                      f"company has its own founder), got {self.num_companies}")
    if not 1 <= self.num_countries <= self.num_cities:
      problems.append(f"num_countries must be in [1, num_cities={self.num_cities}], got "
                      f"{self.num_countries}")
    if self.num_rivers < 1:
      problems.append(f"num_rivers must be at least 1, got {self.num_rivers}")
    if not 0.0 <= self.marriage_fraction <= 1.0:
      problems.append(f"marriage_fraction must be in [0, 1], got {self.marriage_fraction}")
    if not 0.0 <= self.heldout_fraction < 1.0:
      problems.append(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
    if self.renderings < 1:
      problems.append(f"renderings must be at least 1, got {self.renderings}")
    if not 1 <= self.question_variants <= 3:
      problems.append(f"question_variants must be in [1, 3], got {self.question_variants}")
    if self.list_size < 1:
      problems.append(f"list_size must be at least 1, got {self.list_size}")
    if problems:
      raise ValueError("EncyclopediaConfig: " + "; ".join(problems))

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> "EncyclopediaConfig":
    """A named preset ('tiny' or 'default'), with fields overridden by keyword."""
    if name not in cls.PRESETS:
      raise ValueError(f"unknown encyclopedia preset {name!r}; expected one of "
                       f"{sorted(cls.PRESETS)}")
    return cls(**{**cls.PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------
# Entities, articles, QA pairs.


@dataclasses.dataclass(frozen=True)
class Person:
  """A fictional person; employer and spouse are names (spouse None if unmarried)."""
  name: str
  birth_year: int
  birth_city: str
  occupation: str
  employer: str
  spouse: str | None
  kind: ClassVar[str] = "person"


@dataclasses.dataclass(frozen=True)
class City:
  """A fictional city; population is a size band such as 'large'."""
  name: str
  country: str
  founding_year: int
  population: str
  river: str
  kind: ClassVar[str] = "city"


@dataclasses.dataclass(frozen=True)
class Company:
  """A fictional company; headquarters and founder are names."""
  name: str
  founding_year: int
  headquarters: str
  founder: str
  industry: str
  kind: ClassVar[str] = "company"


Entity = Person | City | Company


@dataclasses.dataclass(frozen=True)
class Article:
  """One encyclopedia article: sections of (name, paragraphs), in order."""
  title: str
  kind: str
  sections: tuple[tuple[str, tuple[str, ...]], ...]

  def section(self, name: str) -> tuple[str, ...]:
    """The paragraphs of section `name`."""
    for section_name, paragraphs in self.sections:
      if section_name == name:
        return paragraphs
    raise KeyError(f"article {self.title!r} has no section {name!r}; it has "
                   f"{[s for s, _ in self.sections]}")

  def paragraph(self, section: str, paragraph_index: int) -> str:
    """The text of paragraph `paragraph_index` (from 0) of `section`."""
    paragraphs = self.section(section)
    if not 0 <= paragraph_index < len(paragraphs):
      raise KeyError(f"article {self.title!r}, section {section!r} has {len(paragraphs)} "
                     f"paragraphs; no paragraph index {paragraph_index}")
    return paragraphs[paragraph_index]

  def text(self) -> str:
    """The article in the corpus format (see the module docstring)."""
    blocks = [f"= {self.title} ="]
    for name, paragraphs in self.sections:
      blocks.append(f"== {name} ==")
      blocks.extend(paragraphs)
    return "\n\n".join(blocks)

  def to_dict(self) -> dict[str, Any]:
    return {"title": self.title, "kind": self.kind,
            "sections": [{"name": name, "paragraphs": list(paragraphs)}
                         for name, paragraphs in self.sections]}


@dataclasses.dataclass(frozen=True)
class QAPair:
  """A question with its gold answers and the passages that state its facts.

  facts: one (subject, relation, value) per hop. hop_evidence: per hop, every
    paragraph stating that hop's fact, the subject's own article first (so
    `hop_evidence[i][0]` is the natural recitation target of hop i). evidence: the
    same locations flattened hop by hop, without repeats. relation: the hop
    relations joined by '.', e.g. 'founder.birth_city'. variant: which wording.
  """
  id: str
  question: str
  answers: tuple[str, ...]
  entity: str
  relation: str
  hops: int
  facts: tuple[Fact, ...]
  evidence: tuple[Location, ...]
  hop_evidence: tuple[tuple[Location, ...], ...]
  split: str
  variant: int

  def to_dict(self) -> dict[str, Any]:
    return {"id": self.id, "question": self.question, "answers": list(self.answers),
            "entity": self.entity, "relation": self.relation, "hops": self.hops,
            "facts": [list(f) for f in self.facts],
            "evidence": [list(loc) for loc in self.evidence],
            "hop_evidence": [[list(loc) for loc in hop] for hop in self.hop_evidence],
            "split": self.split, "variant": self.variant}


# ---------------------------------------------------------------------------------
# Answers, judging and passage hints.


# The QA convention of `align_jax.eval.qa` used to judge answers about this world:
# SQuAD/HotpotQA normalisation (lowercase, ASCII punctuation deleted, articles dropped,
# whitespace collapsed; Unicode punctuation such as an em dash is kept).
WORLD_CONVENTION = "squad"


def normalize_answer(text: str) -> str:
  """`text` normalised under the world's convention (`WORLD_CONVENTION`, "squad"):
  `align_jax.eval.qa.normalize_answer(text, WORLD_CONVENTION)`."""
  return qa_metrics.normalize_answer(text, WORLD_CONVENTION)


def judge(qa_pair: QAPair, prediction: str | None) -> bool:
  """Exact match of the normalised prediction against any normalised gold answer
  (`WORLD_CONVENTION`); a prediction that normalises to nothing is wrong."""
  if prediction is None or not normalize_answer(prediction):
    return False
  return qa_metrics.exact_match(prediction, qa_pair.answers, WORLD_CONVENTION) == 1.0


def passage_hint(article: Article | str, section: str, paragraph_index: int) -> str:
  """'Title — Section — paragraph #k', with k counting from 1."""
  title = article.title if isinstance(article, Article) else article
  return f"{title}{HINT_SEPARATOR}{section}{HINT_SEPARATOR}paragraph #{paragraph_index + 1}"


_HINT = re.compile(r"^(.+?) — (.+?) — paragraph #(\d+)$")


def parse_passage_hint(hint: str) -> Location:
  """(title, section, paragraph index from 0) from a passage hint."""
  match = _HINT.match(hint.strip())
  if not match or int(match.group(3)) < 1:
    raise ValueError(f"not a passage hint of the form 'Title — Section — paragraph #k': "
                     f"{hint!r}")
  return match.group(1), match.group(2), int(match.group(3)) - 1


# ---------------------------------------------------------------------------------
# Vocabulary of the world.

_OCCUPATIONS = ("engineer", "painter", "architect", "physician", "teacher", "chemist",
                "lawyer", "journalist", "pilot", "botanist", "accountant", "sculptor",
                "economist", "historian", "musician", "surveyor")
_INDUSTRIES = {  # industry -> company name suffixes
    "shipping": ("Lines", "Freight"), "software": ("Systems", "Software"),
    "mining": ("Mining", "Minerals"), "textile": ("Textiles", "Weavers"),
    "banking": ("Bank", "Capital"), "publishing": ("Press", "Books"),
    "brewing": ("Breweries", "Brewing"), "aviation": ("Airways", "Aero"),
    "construction": ("Builders", "Construction"), "food": ("Foods", "Kitchens"),
    "energy": ("Power", "Energy"), "chemicals": ("Chemicals", "Labs"),
}
_POPULATION_BANDS = ("small", "medium-sized", "large", "very large")
_COUNTRY_ENDINGS = ("ia", "land", "ara", "mar")

_ONSETS = ("", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "kr", "st", "th", "tr")
_SINGLE_ONSETS = tuple(o for o in _ONSETS if len(o) == 1)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "k")
_FINAL_CODAS = ("n", "r", "l", "s", "k", "m")

# Sentence templates for article paragraphs. Slots: {person} {spouse} {city}
# {country} {river} {company} {year} {occupation} {industry} {band} {names}; an
# `_a` suffix adds the indefinite article ("an engineer").
_SENTENCES: dict[str, tuple[str, ...]] = {
    "person_born": ("{person} was born in {city} in {year}.",
                    "{person} was born in {year} in the city of {city}.",
                    "Born in {year}, {person} was a native of {city}."),
    "person_job": ("{person} worked as {occupation_a} at {company}.",
                   "{person} was {occupation_a} employed by {company}.",
                   "{person} spent a career as {occupation_a} at {company}."),
    "person_founded": ("In {year}, {person} founded {company}.",
                       "{person} founded {company} in {year}.",
                       "{person} established {company} in {year}."),
    "married": ("{person} was married to {spouse}.",
                "{person} married {spouse}.",
                "{person} and {spouse} were married."),
    "spouse_about": ("{spouse} was born in {year} and worked as {occupation_a}.",
                     "Born in {year}, {spouse} was {occupation_a} by profession.",
                     "{spouse}, born in {year}, made a living as {occupation_a}."),
    "city_country": ("{city} is a city in {country}.",
                     "{city} is located in {country}.",
                     "The city of {city} belongs to {country}."),
    "city_founded": ("{city} was founded in {year}.",
                     "{city} dates back to {year}, when it was founded.",
                     "The founding of {city} took place in {year}."),
    "city_river": ("{city} lies on the {river} river.",
                   "The {river} river flows through {city}.",
                   "{city} was built on the banks of the {river} river."),
    "city_size": ("{city} is {band_a} city.",
                  "By population, {city} is {band_a} city.",
                  "{city} counts as {band_a} city."),
    "city_companies_one": ("{names} is headquartered in {city}.",
                           "{city} is home to the headquarters of {names}."),
    "city_companies": ("Companies headquartered in {city} include {names}.",
                       "{city} is home to {names}.",
                       "{names} have their headquarters in {city}."),
    "city_people_one": ("{city} is the birthplace of {names}.",
                        "Among the people born in {city} is {names}."),
    "city_people": ("Notable people born in {city} include {names}.",
                    "{city} is the birthplace of {names}.",
                    "People born in {city} include {names}."),
    "company_founded": ("{company} was founded by {person} in {year}.",
                        "{person} founded {company} in {year}.",
                        "In {year}, {person} founded {company}."),
    "company_industry": ("{company} is {industry_a} company.",
                         "{company} operates in the {industry} industry.",
                         "{company} does business in {industry}."),
    "company_industry_hq": ("{company} is {industry_a} company based in {city}.",
                            "{company} is {industry_a} firm with its headquarters in {city}.",
                            "{company}, {industry_a} company, is headquartered in {city}."),
    "company_hq": ("{company} is headquartered in {city}.",
                   "The headquarters of {company} are in {city}.",
                   "{company} is based in {city}."),
    "company_people_one": ("{company} employed {names}.",
                           "{names} worked for {company}."),
    "company_people": ("Notable employees of {company} include {names}.",
                       "People who worked for {company} include {names}.",
                       "{company} employed {names}."),
}

# Question templates per relation; {s} is the subject's name or, in two-hop
# questions, a phrase describing the bridge entity. {s} never starts a question.
_QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "birth_year"): ("In what year was {s} born?", "When was {s} born?",
                               "What is the birth year of {s}?"),
    ("person", "birth_city"): ("In which city was {s} born?", "Where was {s} born?",
                               "What is the birthplace of {s}?"),
    ("person", "occupation"): ("What was the occupation of {s}?",
                               "What did {s} do for a living?",
                               "What was the profession of {s}?"),
    ("person", "employer"): ("Which company did {s} work for?", "Who employed {s}?",
                             "What was the employer of {s}?"),
    ("person", "spouse"): ("Who was {s} married to?", "Who was the spouse of {s}?",
                           "Whom did {s} marry?"),
    ("city", "country"): ("In which country is {s}?", "Which country is {s} located in?",
                          "What country does {s} belong to?"),
    ("city", "founding_year"): ("When was {s} founded?", "In what year was {s} founded?",
                                "What is the founding year of {s}?"),
    ("city", "population"): ("How large is {s}?", "What size of city is {s}?",
                             "How big is the population of {s}?"),
    ("city", "river"): ("Which river flows through {s}?", "On which river does {s} lie?",
                        "What river runs through {s}?"),
    ("company", "founding_year"): ("When was {s} founded?",
                                   "In what year was {s} established?",
                                   "What is the founding year of {s}?"),
    ("company", "headquarters"): ("Where is {s} headquartered?",
                                  "In which city is {s} based?",
                                  "Which city hosts the headquarters of {s}?"),
    ("company", "founder"): ("Who founded {s}?", "Who was the founder of {s}?",
                             "Which person started {s}?"),
    ("company", "industry"): ("In which industry does {s} operate?",
                              "What kind of business is {s}?", "What industry is {s} in?"),
}

# Phrases naming the entity a relation leads to, for two-hop questions.
_BRIDGES: dict[str, tuple[str, ...]] = {
    "employer": ("the company {s} worked for", "the employer of {s}"),
    "birth_city": ("the city where {s} was born", "the birthplace of {s}"),
    "spouse": ("the spouse of {s}", "the person {s} was married to"),
    "founder": ("the founder of {s}", "the person who founded {s}"),
    "headquarters": ("the city where {s} is headquartered", "the home city of {s}"),
}

_RELATIONS = {
    "person": ("birth_year", "birth_city", "occupation", "employer", "spouse"),
    "city": ("country", "founding_year", "population", "river"),
    "company": ("founding_year", "headquarters", "founder", "industry"),
}
_TARGET_KIND = {"employer": "company", "birth_city": "city", "spouse": "person",
                "founder": "person", "headquarters": "city"}
_TWO_HOP = {
    "person": (("employer", "founding_year"), ("employer", "headquarters"),
               ("employer", "founder"), ("employer", "industry"),
               ("birth_city", "country"), ("birth_city", "founding_year"),
               ("birth_city", "river"), ("spouse", "birth_year"), ("spouse", "birth_city"),
               ("spouse", "occupation"), ("spouse", "employer")),
    "company": (("founder", "birth_year"), ("founder", "birth_city"),
                ("founder", "occupation"), ("founder", "spouse"),
                ("headquarters", "country"), ("headquarters", "founding_year"),
                ("headquarters", "river")),
}

# Words a generated name must not be (they occur in the templates and values).
_RESERVED = frozenset(
    w.lower() for text in (
        *(t for ts in _SENTENCES.values() for t in ts),
        *(t for ts in _QUESTIONS.values() for t in ts),
        *(t for ts in _BRIDGES.values() for t in ts),
        *_OCCUPATIONS, *_INDUSTRIES, *(s for ss in _INDUSTRIES.values() for s in ss),
        *_POPULATION_BANDS, "river city company industry")
    for w in re.findall(r"[A-Za-z]+", text))


def _indefinite(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join_names(names: Sequence[str]) -> str:
  if len(names) == 1:
    return names[0]
  return ", ".join(names[:-1]) + " and " + names[-1]


# ---------------------------------------------------------------------------------
# Sampling the entities.


class _NameMaker:
  """Fictional words from syllables; every word is used at most once in a world."""

  def __init__(self, rng: np.random.Generator):
    self._rng = rng
    self._used: set[str] = set()

  def _pick(self, options: Sequence[str]) -> str:
    return options[int(self._rng.integers(len(options)))]

  def word(self, min_syllables: int, max_syllables: int, ending: str = "") -> str:
    for _ in range(1000):
      count = int(self._rng.integers(min_syllables, max_syllables + 1))
      parts, coda = [], ""
      for i in range(count):
        onset = self._pick(_SINGLE_ONSETS if coda or i > 0 else _ONSETS)
        coda = self._pick(_CODAS)
        if i == count - 1 and ending[:1] in tuple("aeiou"):
          coda = coda or self._pick(_FINAL_CODAS)  # no vowel clash before the ending
        parts.append(onset + self._pick(_VOWELS) + coda)
      word = ("".join(parts) + ending).capitalize()
      if len(word) >= 5 and word.lower() not in self._used and word.lower() not in _RESERVED:
        self._used.add(word.lower())
        return word
    raise RuntimeError("could not find an unused name; the world is too large for the "
                       "syllable inventory")


def _sample_entities(config: EncyclopediaConfig, rng: np.random.Generator
                     ) -> tuple[list[Person], list[City], list[Company]]:
  names = _NameMaker(rng)

  def pick(options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]

  countries = [names.word(2, 2, pick(_COUNTRY_ENDINGS)) for _ in range(config.num_countries)]
  rivers = [names.word(2, 2) for _ in range(config.num_rivers)]
  cities = []
  for i in range(config.num_cities):
    country = countries[i] if i < len(countries) else pick(countries)  # no empty country
    cities.append(City(name=names.word(2, 3), country=country,
                       founding_year=int(rng.integers(800, 1901)),
                       population=pick(_POPULATION_BANDS), river=pick(rivers)))

  people = [dict(name=f"{names.word(2, 2)} {names.word(2, 3)}",
                 birth_year=int(rng.integers(1900, 1986)), birth_city=pick(cities).name,
                 occupation=pick(_OCCUPATIONS), spouse=None)
            for _ in range(config.num_people)]

  num_couples = int(round(config.marriage_fraction * config.num_people / 2))
  order = rng.permutation(config.num_people)
  for a, b in zip(order[0:2 * num_couples:2], order[1:2 * num_couples:2]):
    people[a]["spouse"], people[b]["spouse"] = people[b]["name"], people[a]["name"]

  industries = list(_INDUSTRIES)
  founders = rng.choice(config.num_people, size=config.num_companies, replace=False)
  companies = []
  for founder in founders:
    industry = pick(industries)
    birth_year = people[founder]["birth_year"]
    companies.append(Company(
        name=f"{names.word(2, 2)} {pick(_INDUSTRIES[industry])}",
        founding_year=birth_year + int(rng.integers(25, min(45, 2020 - birth_year) + 1)),
        headquarters=pick(cities).name, founder=people[founder]["name"], industry=industry))

  for person in people:
    # An employer that existed in the person's working life, where there is one.
    candidates = [c for c in companies if c.founding_year <= person["birth_year"] + 50]
    person["employer"] = pick(candidates or companies).name
  return [Person(**p) for p in people], cities, companies


def _sample_split(config: EncyclopediaConfig, people: list[Person], cities: list[City],
                  companies: list[Company], rng: np.random.Generator) -> dict[str, str]:
  """Entity name -> 'train' or 'heldout'; spouses share a split."""
  heldout: list[str] = []
  index = {p.name: i for i, p in enumerate(people)}
  units = [[p.name] + ([p.spouse] if p.spouse else []) for p in people
           if p.spouse is None or index[p.name] < index[p.spouse]]
  target = int(round(config.heldout_fraction * len(people)))
  taken = 0
  for u in rng.permutation(len(units)):
    if taken + len(units[u]) <= target or (taken == 0 and target > 0):
      heldout.extend(units[u])
      taken += len(units[u])
  for group in (cities, companies):
    count = int(round(config.heldout_fraction * len(group)))
    if config.heldout_fraction > 0:
      count = min(max(count, 1), len(group) - 1)
    heldout.extend(group[i].name for i in rng.permutation(len(group))[:count])
  held = set(heldout)
  return {e.name: HELDOUT if e.name in held else TRAIN for e in [*people, *cities, *companies]}


# ---------------------------------------------------------------------------------
# Laying out and rendering articles.


@dataclasses.dataclass(frozen=True)
class _Sentence:
  group: str
  slots: dict[str, str]
  facts: tuple[tuple[str, str], ...]  # (subject, relation) keys stated


_Plan = list[tuple[str, list[list[_Sentence]]]]  # sections of paragraphs of sentences


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
  """`items` in order, cut into the fewest runs of at most `size`, as even as possible."""
  count = -(-len(items) // size)
  bounds = [round(i * len(items) / count) for i in range(count + 1)]
  return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class _Layout:
  """Decides which facts each paragraph of each article states."""

  def __init__(self, people: list[Person], cities: list[City], companies: list[Company],
               config: EncyclopediaConfig):
    self.config = config
    self.people = {p.name: p for p in people}
    self.cities = {c.name: c for c in cities}
    self.companies = {c.name: c for c in companies}
    self.founded = {c.founder: c for c in companies}
    self.born_in = {c.name: [p for p in people if p.birth_city == c.name] for c in cities}
    self.based_in = {c.name: [k for k in companies if k.headquarters == c.name] for c in cities}
    self.employees = {k.name: [p for p in people if p.employer == k.name] for k in companies}

  def plan(self, entity: Entity) -> _Plan:
    return {"person": self._person, "city": self._city,
            "company": self._company}[entity.kind](entity)

  def _person(self, p: Person) -> _Plan:
    cross = self.config.cross_mentions
    city = self.cities[p.birth_city]
    early = [_Sentence("person_born", dict(person=p.name, city=city.name,
                                           year=str(p.birth_year)),
                       ((p.name, "birth_year"), (p.name, "birth_city")))]
    if cross:
      early.append(_Sentence("city_country", dict(city=city.name, country=city.country),
                             ((city.name, "country"),)))
    employer = self.companies[p.employer]
    career = [_Sentence("person_job", dict(person=p.name, occupation=p.occupation,
                                           company=employer.name),
                        ((p.name, "occupation"), (p.name, "employer")))]
    if cross:
      career.append(_Sentence(
          "company_industry_hq", dict(company=employer.name, industry=employer.industry,
                                      city=employer.headquarters),
          ((employer.name, "industry"), (employer.name, "headquarters"))))
      if p.name in self.founded:
        company = self.founded[p.name]
        career.append(_Sentence("person_founded", dict(person=p.name, company=company.name,
                                                       year=str(company.founding_year)),
                                ((company.name, "founder"), (company.name, "founding_year"))))
    sections = [("Early life", [early]), ("Career", [career])]
    if p.spouse:
      spouse = self.people[p.spouse]
      personal = [_Sentence("married", dict(person=p.name, spouse=spouse.name),
                            ((p.name, "spouse"), (spouse.name, "spouse")))]
      if cross:
        personal.append(_Sentence(
            "spouse_about", dict(spouse=spouse.name, year=str(spouse.birth_year),
                                 occupation=spouse.occupation),
            ((spouse.name, "birth_year"), (spouse.name, "occupation"))))
      sections.append(("Personal life", [personal]))
    return sections

  def _city(self, c: City) -> _Plan:
    history = [_Sentence("city_country", dict(city=c.name, country=c.country),
                         ((c.name, "country"),)),
               _Sentence("city_founded", dict(city=c.name, year=str(c.founding_year)),
                         ((c.name, "founding_year"),))]
    geography = [_Sentence("city_river", dict(city=c.name, river=c.river), ((c.name, "river"),)),
                 _Sentence("city_size", dict(city=c.name, band=c.population),
                           ((c.name, "population"),))]
    sections = [("History", [history]), ("Geography", [geography])]
    if not self.config.cross_mentions:
      return sections
    size = self.config.list_size
    if self.based_in[c.name]:
      sections.append(("Economy", [
          [_Sentence("city_companies" if len(chunk) > 1 else "city_companies_one",
                     dict(city=c.name, names=_join_names([k.name for k in chunk])),
                     tuple((k.name, "headquarters") for k in chunk))]
          for chunk in _chunks(self.based_in[c.name], size)]))
    if self.born_in[c.name]:
      sections.append(("Notable people", [
          [_Sentence("city_people" if len(chunk) > 1 else "city_people_one",
                     dict(city=c.name,
                          names=_join_names([f"{p.name} (born {p.birth_year})" for p in chunk])),
                     tuple(f for p in chunk
                           for f in ((p.name, "birth_city"), (p.name, "birth_year"))))]
          for chunk in _chunks(self.born_in[c.name], size)]))
    return sections

  def _company(self, k: Company) -> _Plan:
    history = [_Sentence("company_founded", dict(company=k.name, person=k.founder,
                                                 year=str(k.founding_year)),
                         ((k.name, "founder"), (k.name, "founding_year"))),
               _Sentence("company_industry", dict(company=k.name, industry=k.industry),
                         ((k.name, "industry"),))]
    operations = [_Sentence("company_hq", dict(company=k.name, city=k.headquarters),
                            ((k.name, "headquarters"),))]
    if self.config.cross_mentions:
      city = self.cities[k.headquarters]
      operations.append(_Sentence("city_country", dict(city=city.name, country=city.country),
                                  ((city.name, "country"),)))
    sections = [("History", [history]), ("Operations", [operations])]
    if self.config.cross_mentions and self.employees[k.name]:
      sections.append(("Employees", [
          [_Sentence("company_people" if len(chunk) > 1 else "company_people_one",
                     dict(company=k.name,
                          names=_join_names([f"{p.name} ({p.occupation})" for p in chunk])),
                     tuple(f for p in chunk
                           for f in ((p.name, "employer"), (p.name, "occupation"))))]
          for chunk in _chunks(self.employees[k.name], size=self.config.list_size)]))
    return sections


def _render(title: str, kind: str, plan: _Plan, rng: np.random.Generator) -> Article:
  sections = []
  for name, paragraphs in plan:
    texts = []
    for sentences in paragraphs:
      parts = []
      for sentence in sentences:
        templates = _SENTENCES[sentence.group]
        slots = dict(sentence.slots)
        for key in ("occupation", "industry", "band"):
          if key in slots:
            slots[key + "_a"] = _indefinite(slots[key])
        parts.append(templates[int(rng.integers(len(templates)))].format(**slots))
      texts.append(" ".join(parts))
    sections.append((name, tuple(texts)))
  return Article(title=title, kind=kind, sections=tuple(sections))


# ---------------------------------------------------------------------------------
# The world.


class EncyclopediaWorld:
  """Entities, articles and QA pairs of one encyclopedia; build with `build_world`."""

  def __init__(self, config: EncyclopediaConfig):
    self.config = config
    seed = config.seed
    self.people, self.cities, self.companies = _sample_entities(
        config, np.random.default_rng([seed, 0]))
    self.entities: dict[str, Entity] = {
        e.name: e for e in [*self.people, *self.cities, *self.companies]}
    self.splits = _sample_split(config, self.people, self.cities, self.companies,
                                np.random.default_rng([seed, 1]))
    layout = _Layout(self.people, self.cities, self.companies, config)
    self._plans = [(e.name, e.kind, layout.plan(e)) for e in self.entities.values()]
    self.articles = self._render(0)
    self._by_title = {a.title: a for a in self.articles}
    self._evidence: dict[tuple[str, str], list[Location]] = {}
    for title, _, plan in self._plans:
      for section, paragraphs in plan:
        for k, sentences in enumerate(paragraphs):
          for sentence in sentences:
            for key in sentence.facts:
              locations = self._evidence.setdefault(key, [])
              if (title, section, k) not in locations:
                locations.append((title, section, k))
    self._qa = self._make_questions(np.random.default_rng([seed, 3]))

  # Articles and paragraphs.

  def _render(self, rendering: int) -> list[Article]:
    rng = np.random.default_rng([self.config.seed, 2, rendering])
    return [_render(title, kind, plan, rng) for title, kind, plan in self._plans]

  def article(self, title: str) -> Article:
    """The article titled `title`."""
    if title not in self._by_title:
      raise KeyError(f"no article titled {title!r}")
    return self._by_title[title]

  def paragraph_text(self, title: str, section: str, paragraph_index: int) -> str:
    """The text of a paragraph addressed by (title, section, index from 0)."""
    return self.article(title).paragraph(section, paragraph_index)

  def paragraphs(self) -> Iterator[tuple[str, str, int, str]]:
    """Every paragraph as (title, section, index from 0, text), in corpus order."""
    for article in self.articles:
      for section, paragraphs in article.sections:
        for k, text in enumerate(paragraphs):
          yield article.title, section, k, text

  def corpus_texts(self, renderings: int | None = None) -> list[str]:
    """Pretraining texts: every article once per rendering (default: config.renderings).

    The first rendering is `articles`; later ones word the same facts differently.
    """
    count = self.config.renderings if renderings is None else renderings
    texts = [a.text() for a in self.articles]
    for r in range(1, count):
      texts.extend(a.text() for a in self._render(r))
    return texts

  def evidence_for(self, subject: str, relation: str) -> list[Location]:
    """Every paragraph stating the fact (subject, relation), the subject's article first."""
    locations = self._evidence.get((subject, relation))
    if not locations:
      raise KeyError(f"no paragraph states {relation!r} of {subject!r}")
    return sorted(locations, key=lambda loc: loc[0] != subject)

  def split_of(self, name: str) -> str:
    """'train' or 'heldout' for the entity called `name`."""
    return self.splits[name]

  # Questions.

  def _value(self, subject: str, relation: str) -> str | None:
    value = getattr(self.entities[subject], relation)
    return None if value is None else str(value)

  @staticmethod
  def _answers(relation: str, value: str) -> tuple[str, ...]:
    if relation == "river":
      return (value, f"{value} river", f"river {value}")
    if relation == "population":
      return (value, f"{value} city")
    if relation == "industry":
      return (value, f"{value} company", f"{value} industry")
    return (value,)

  def _pair(self, subject: str, chain: tuple[str, ...], question: str, variant: int
            ) -> QAPair:
    facts, current = [], subject
    for relation in chain:
      value = self._value(current, relation)
      facts.append((current, relation, value))
      current = value
    hop_evidence = tuple(tuple(self.evidence_for(s, r)) for s, r, _ in facts)
    evidence = tuple(dict.fromkeys(loc for hop in hop_evidence for loc in hop))
    split = HELDOUT if any(self.splits[s] == HELDOUT for s, _, _ in facts) else TRAIN
    relation = ".".join(chain)
    return QAPair(id=f"{relation}:{subject}:{variant}", question=question,
                  answers=self._answers(chain[-1], facts[-1][2]), entity=subject,
                  relation=relation, hops=len(chain), facts=tuple(facts), evidence=evidence,
                  hop_evidence=hop_evidence, split=split, variant=variant)

  def _make_questions(self, rng: np.random.Generator) -> list[QAPair]:
    n = self.config.question_variants
    pairs = []
    for entity in self.entities.values():
      for relation in _RELATIONS[entity.kind]:
        if self._value(entity.name, relation) is None:
          continue
        templates = _QUESTIONS[(entity.kind, relation)]
        for variant, t in enumerate(rng.permutation(len(templates))[:n]):
          pairs.append(self._pair(entity.name, (relation,),
                                  templates[t].format(s=entity.name), variant))
    for entity in self.entities.values():
      for first, second in _TWO_HOP.get(entity.kind, ()):
        bridge = self._value(entity.name, first)
        if bridge is None or self._value(bridge, second) is None:
          continue
        templates = _QUESTIONS[(_TARGET_KIND[first], second)]
        phrases = _BRIDGES[first]
        combos = [(t, b) for t in range(len(templates)) for b in range(len(phrases))]
        for variant, c in enumerate(rng.permutation(len(combos))[:n]):
          t, b = combos[c]
          question = templates[t].format(s=phrases[b].format(s=entity.name))
          pairs.append(self._pair(entity.name, (first, second), question, variant))
    return pairs

  def qa(self, split: str | None = None, hops: int | None = None,
         variant: int | None = None) -> list[QAPair]:
    """QA pairs, optionally only one split ('train'/'heldout'), hop count or wording."""
    if split not in (None, TRAIN, HELDOUT):
      raise ValueError(f"split must be None, 'train' or 'heldout', got {split!r}")
    return [q for q in self._qa
            if (split is None or q.split == split) and (hops is None or q.hops == hops)
            and (variant is None or q.variant == variant)]

  def judge(self, qa_pair: QAPair, prediction: str | None) -> bool:
    """The gold judge (see the module-level `judge`)."""
    return judge(qa_pair, prediction)

  # Files and figures.

  def to_jsonl(self, directory: str) -> dict[str, str]:
    """Writes articles.jsonl, qa_train.jsonl and qa_heldout.jsonl; returns their paths.

    Raises FileExistsError, writing nothing, when any of them already exists.
    """
    contents = {
        "articles.jsonl": [{**a.to_dict(), "split": self.splits[a.title], "text": a.text()}
                           for a in self.articles],
        "qa_train.jsonl": [q.to_dict() for q in self.qa(TRAIN)],
        "qa_heldout.jsonl": [q.to_dict() for q in self.qa(HELDOUT)],
    }
    paths = {name: fs.join(directory, name) for name in contents}
    existing = [p for p in paths.values() if fs.exists(p)]
    if existing:
      raise FileExistsError(f"refusing to overwrite existing files: {existing}")
    fs.makedirs(directory)
    for name, records in contents.items():
      partial = paths[name] + ".partial"
      with fs.open(partial, "w") as f:
        for record in records:
          f.write(json.dumps(record, ensure_ascii=False) + "\n")
      fs.replace(partial, paths[name])
    return {name[:-len(".jsonl")]: path for name, path in paths.items()}

  def stats(self) -> dict[str, Any]:
    """Counts of entities, articles, sections, paragraphs, words, characters and QA pairs.

    'words' counts paragraph words; 'corpus_words' and 'corpus_characters' cover
    `corpus_texts()` (headings and every rendering included).
    """
    kinds = ("person", "city", "company")
    entities = {k: sum(e.kind == k for e in self.entities.values()) for k in kinds}
    heldout = {k: sum(e.kind == k and self.splits[e.name] == HELDOUT
                      for e in self.entities.values()) for k in kinds}
    lengths = [len(text.split()) for *_, text in self.paragraphs()]
    corpus = self.corpus_texts()
    qa: dict[str, Any] = {}
    for split in (TRAIN, HELDOUT):
      by_hops = {str(h): len(self.qa(split, h)) for h in (1, 2)}
      qa[split] = {**by_hops, "total": sum(by_hops.values())}
    qa["total"] = len(self._qa)
    return {
        "entities": {**entities, "total": sum(entities.values())},
        "heldout_entities": {**heldout, "total": sum(heldout.values())},
        "articles": len(self.articles),
        "sections": sum(len(a.sections) for a in self.articles),
        "paragraphs": len(lengths),
        "words": sum(lengths),
        "paragraph_words": {"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 1),
                            "max": max(lengths)},
        "corpus_texts": len(corpus),
        "corpus_words": sum(len(t.split()) for t in corpus),
        "corpus_characters": sum(len(t) for t in corpus),
        "qa": qa,
    }


def build_world(config: EncyclopediaConfig | None = None) -> EncyclopediaWorld:
  """Builds the encyclopedia world for `config` (default: the 'default' preset)."""
  return EncyclopediaWorld(config or EncyclopediaConfig())
