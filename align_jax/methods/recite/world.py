"""RECITE on the encyclopedia world: does reciting help a tiny model answer held-out facts?

Stages per seed (in WORKDIR/seed_<k>/<stage>/, resumable, see `align_jax.pipeline`):
  world                  the seed's encyclopedia and the pretraining documents
  vocabulary             a sentencepiece vocabulary that keeps newlines (the prompts'
                         separators)
  pretrain               a tiny model trained from scratch on the documents
  hint_data_<setting>    the pretrained model writes questions about paragraphs; each
                         becomes a question -> hint -> passage example (hint fine-tuning's
                         data). 'strict': training entities' paragraphs only; 'corpus':
                         paragraphs drawn from the whole corpus (the paper's setting).
                         Records how much of the evaluation the data has seen.
  hint_finetune_<setting> the pretrained model fine-tuned on that data (with replay)
  eval                   on held-out entities, for each model: direct answering and chain
                         of thought (greedy, and sampled paths voted: the compute-matched
                         baselines), recite-and-answer, diversified and hinted recitation,
                         at 1/5/20 paths (single-hop); the pretrained model on two-hop
                         questions (the same baselines and multiple recitations); EM/F1,
                         the error analysis and diagnostics of where recitation fails
`recite_world` runs them for several seeds and writes WORKDIR/report.md, which leads with
each model's recitation against its best compute-matched non-recitation method.

Pretraining documents: every paragraph as a `Hint: ... / Recitation: ...` block (the
passage-prompt format, so the model can recite a paragraph from its hint), repeated so
that it is memorised; for the QA pairs of training entities only, few-shot documents in
every prompt format (direct, chain of thought, recite, answer in both layouts, hint,
multi-recitation); and reading (one passage, or the gold passage among others) and hint
documents from skill worlds (other seeds, other names) whose passages the model never
memorises. Held-out entities' facts appear in pretraining only in paragraphs:
answering them directly needs knowledge the model holds as passages, reciting first
retrieves the passage and then reads the answer from it, which is what the experiment
measures.

Why skill worlds: a model this small, shown reading and hint documents only about the
training entities, memorises their answers instead of learning to read: it answers from
a passage only what it already knows about the entity, and writes hints that name the
exemplar's entity instead of the question's. Documents about never-memorised entities
can only be completed from the context, so reading and copying names become skills.
That takes many skill worlds with a few questions each, every skill paragraph as a
reading set (its passage, then all of its questions with their answers), a vocabulary in
which a value reads the same in a passage as in an answer, and about 1,000 pretraining
steps (the gin runs 900): with 24 skill worlds, no reading sets and a unigram vocabulary
the model read 1-4% of an unseen world's answers after 480 or 1,500 steps; with all
four, 70% (docs/methods/recite.md).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.eval.qa import normalize_answer
from align_jax.methods.recite import analysis
from align_jax.methods.recite.analysis import QuestionResult
from align_jax.methods.recite import prompts as prompt_lib
from align_jax.methods.recite.recite import SAMPLED, ReciteConfig, Reciter, run_method
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.pipeline import (Pipeline, Stage, TrainingSchedule, is_writer, run_seeds,
                                stage_seconds, training_stage, vocabulary_stage)
from align_jax.pipeline.reports import (markdown_table, mean_std, plot_curves, plot_lines,
                                        write_report)
from align_jax.sampling import Sampler
from align_jax.training.checkpoints import config_record
from align_jax.training.runs import load_run
from align_jax.worlds.encyclopedia import (HINT_SEPARATOR, WORLD_CONVENTION,
                                           EncyclopediaConfig, EncyclopediaWorld, QAPair,
                                           build_world, passage_hint)

NEWLINE_VOCABULARY = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                      "user_defined_symbols": ["\n"]}
# The world's vocabulary: BPE (words and frequent syllables as pieces) that keeps newlines
# and gives sentence punctuation pieces of its own, so that a value reads the same at the
# end of a sentence as in an answer ("1941." is "1941" "."). The default unigram model,
# trained on a corpus where the memorised entities' names repeat, spent its pieces on
# those names and the years with their full stops, and split common words ("was") and
# every other name into single characters: nothing read from a passage looked like the
# answer it should become.
WORLD_VOCABULARY = {**NEWLINE_VOCABULARY, "model_type": "bpe",
                    "user_defined_symbols": ["\n", ".", "?", "(", ")", "\u2014", ":"]}


def exemplar_for(world: EncyclopediaWorld, qa: QAPair) -> prompt_lib.Exemplar:
  """The QA pair with the paragraph that states each hop's fact (its subject's own)."""
  locations = [hop[0] for hop in qa.hop_evidence]
  return prompt_lib.Exemplar(
      question=qa.question, answer=qa.answers[0],
      passages=tuple(world.paragraph_text(*loc) for loc in locations),
      hints=tuple(passage_hint(*loc) for loc in locations),
      reasoning=" ".join(f"{s}'s {r.replace('_', ' ')} is {v}." for s, r, v in qa.facts))


def _complete(prompt: str, continuation: str) -> str:
  return f"{prompt} {continuation}"


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What the tiny model is pretrained on (see the module docstring).

  shots: exemplars in every few-shot document (and in the evaluation prompts).
  passage_repeats: copies of each passage document (passages must be memorised).
  qa_repeats: copies of the training entities' QA documents (each with fresh exemplars).
  skill_worlds: further encyclopedias (other seeds, so other names) whose passages are
    never memorised: their reading (passage, question -> answer) and hint
    (question -> hint) documents can only be completed by reading and copying from the
    context, which teaches those as skills instead of memorised facts of the training
    entities. skill_questions: questions drawn from each skill world, single-hop and
    two-hop. skill_shots: exemplars in those documents (0: the format is already known
    from the main documents, and short documents are cheap).
  reading_sets: also one reading document per paragraph of every skill world: the
    passage, then each of its single-hop questions with its answer (several answers read
    from one passage; with many skill worlds, too many names to memorise).
  answer_layouts: the answer-prompt layouts ('paper', 'reading') the reading documents
    are written in (the evaluation measures each). context_distractors: other passages
    of a skill world placed, in random order, beside the gold one in further reading
    documents (0: none), so that the model learns to answer from several passages in
    one context (diversified recitation's aggregation).
  """
  shots: int = 1
  passage_repeats: int = 30
  qa_repeats: int = 3
  skill_worlds: int = 40
  skill_questions: tuple[int, int] = (100, 50)
  skill_shots: int = 0
  reading_sets: bool = False
  answer_layouts: tuple[str, ...] = ("paper", "reading")
  context_distractors: int = 2


_FORMATS = {  # what each kind of QA document teaches, by hop count
    "main": {1: ("direct", "answer", "chain_of_thought", "recite", "hint"),
             2: ("direct", "answer", "chain_of_thought", "multi_recite")},
    "skill": {1: ("answer", "answer_context", "hint"), 2: ("answer",)},
}


def _qa_documents(world: EncyclopediaWorld, qas: list[QAPair], formats: tuple[str, ...],
                  shots: int, rng: np.random.Generator, corpus: CorpusConfig) -> list[str]:
  exemplars = [exemplar_for(world, q) for q in qas]
  paragraphs = [p[3] for p in world.paragraphs()] if "answer_context" in formats else []
  docs = []
  for index, target in enumerate(exemplars):
    def pick() -> list[prompt_lib.Exemplar]:
      choice = rng.choice(len(exemplars) - 1, shots, replace=False)
      return [exemplars[i + (i >= index)] for i in choice]  # never the target itself
    for name in formats:
      if name == "direct":
        docs.append(_complete(prompt_lib.direct_prompt(pick(), target.question), target.answer))
      elif name == "answer":
        for layout in corpus.answer_layouts:
          docs.append(_complete(prompt_lib.answer_prompt(pick(), target.passages,
                                                         target.question, layout),
                                target.answer))
      elif name == "answer_context":
        if corpus.context_distractors:
          others = [paragraphs[i] for i in rng.permutation(len(paragraphs))[
              :corpus.context_distractors + 1] if paragraphs[i] not in target.passages]
          context = others[:corpus.context_distractors] + list(target.passages)
          context = [context[i] for i in rng.permutation(len(context))]
          for layout in corpus.answer_layouts:
            docs.append(_complete(prompt_lib.answer_prompt(pick(), context, target.question,
                                                           layout), target.answer))
      elif name == "chain_of_thought":
        docs.append(_complete(prompt_lib.chain_of_thought_prompt(pick(), target.question),
                              f"{target.reasoning}\nAnswer: {target.answer}"))
      elif name == "recite":
        docs.append(_complete(prompt_lib.recite_prompt(pick(), target.question),
                              target.passages[0]))
      elif name == "hint":
        docs.append(_complete(prompt_lib.hint_prompt(pick(), target.question), target.hints[0]))
      elif name == "multi_recite":
        docs.append(_complete(prompt_lib.multi_recite_prompt(pick(), target.question),
                              prompt_lib.join_recitations(target.passages)))
      else:
        raise ValueError(f"unknown document format {name!r}")
  return docs


def passage_documents(world: EncyclopediaWorld) -> list[str]:
  """'Hint: title — section — paragraph #k / Recitation: passage' for every paragraph."""
  return [_complete(prompt_lib.passage_prompt([], passage_hint(t, s, k)), text)
          for t, s, k, text in world.paragraphs()]


def training_documents(world: EncyclopediaWorld, corpus: CorpusConfig, rng: np.random.Generator
                       ) -> list[str]:
  """Passages of every entity, few-shot QA documents of the training entities in every
  prompt format, and reading / hint documents of the skill worlds, shuffled."""
  docs = passage_documents(world) * corpus.passage_repeats
  for _ in range(corpus.qa_repeats):
    for hops, formats in _FORMATS["main"].items():
      docs += _qa_documents(world, world.qa(split="train", hops=hops), formats, corpus.shots,
                            rng, corpus)
  for i in range(corpus.skill_worlds):
    other = skill_world(world, i)
    for hops, formats in _FORMATS["skill"].items():
      pool = other.qa(hops=hops, variant=0)
      chosen = [pool[j] for j in sorted(rng.permutation(len(pool))[
          :corpus.skill_questions[hops - 1]])]
      docs += _qa_documents(other, chosen, formats, corpus.skill_shots, rng, corpus)
    if corpus.reading_sets:
      docs += reading_sets(other)
  return [docs[i] for i in rng.permutation(len(docs))]


def reading_sets(world: EncyclopediaWorld) -> list[str]:
  """Per paragraph that answers single-hop questions (first wording): the passage, then
  every such question with its answer, in the paper's answer layout."""
  by_passage: dict[str, list[prompt_lib.Exemplar]] = {}
  for qa in world.qa(hops=1, variant=0):
    exemplar = exemplar_for(world, qa)
    by_passage.setdefault(exemplar.passages[0], []).append(exemplar)
  return [_complete(prompt_lib.answer_prompt(pairs[:-1], [passage], pairs[-1].question),
                    pairs[-1].answer) for passage, pairs in by_passage.items()]


def skill_world(world: EncyclopediaWorld, index: int) -> EncyclopediaWorld:
  """The index-th skill world: the same design, another seed, so other names."""
  return build_world(dataclasses.replace(world.config, seed=world.config.seed + 1000 + index))


@dataclasses.dataclass(frozen=True)
class HintDataConfig:
  """Hint fine-tuning data: `questions_per_passage` questions the pretrained model writes
  (sampled) for each chosen paragraph, each made a question -> hint -> passage example,
  mixed with `replay` pretraining documents per example (so the other formats stay)
  and, with `replay_passages`, every paragraph's passage document once (so the
  fine-tuning does not wear away the passages it does not target).

  settings: which fine-tuned models to build, each from its own data:
    'strict'  questions only for the training entities' paragraphs that state no
              held-out fact: no question -> hint -> passage target holds what an
              evaluation question asks (the replayed passage documents, held-out
              entities' included, are pretraining documents: a hint and its passage,
              no question);
    'corpus'  the paper's setting: questions for paragraphs drawn at random from the whole
              corpus (as many as 'strict' uses), held-out entities' included.
  """
  questions_per_passage: int = 2
  replay: float = 1.0
  replay_passages: bool = True
  settings: tuple[str, ...] = ("strict", "corpus")

  def __post_init__(self):
    unknown = [s for s in self.settings if s not in HINT_SETTINGS]
    if unknown or not self.settings:
      raise ValueError(f"HintDataConfig.settings = {self.settings!r}; expected some of "
                       f"{HINT_SETTINGS}")


HINT_SETTINGS = ("strict", "corpus")


@dataclasses.dataclass(frozen=True)
class WorldEvalConfig:
  """How the held-out evaluation runs.

  path_counts: numbers of voting paths EM is reported at; the largest is sampled per
    question, the others vote on `resamples` random subsets of those paths.
  max_questions: held-out questions per hop count. batch_size: the samplers' batch size.
  """
  path_counts: tuple[int, ...] = (1, 5, 20)
  resamples: int = 5
  max_questions: int = 100          # per hop count, held-out, first wording only
  batch_size: int = 64


def _seed_world(config: EncyclopediaConfig, seed: int) -> EncyclopediaWorld:
  return build_world(dataclasses.replace(config, seed=seed))


def _exemplars(world: EncyclopediaWorld, hops: int, shots: int, seed: int
               ) -> list[prompt_lib.Exemplar]:
  """The evaluation's few-shot exemplars: training-entity questions, one wording each."""
  pool = world.qa(split="train", hops=hops, variant=0)
  rng = np.random.default_rng([seed, hops])
  return [exemplar_for(world, pool[i]) for i in rng.choice(len(pool), shots, replace=False)]


def _sampler(run_dir: str, model: TransformerConfig, vocabulary: str,
             settings: WorldEvalConfig, mesh, rules) -> Sampler:
  """A sampler over the parameters a training stage left in run_dir."""
  run = load_run(run_dir, config=model, vocabulary=vocabulary, mesh=mesh, rules=rules)
  return run.sampler(batch_size=settings.batch_size, length_buckets=(128, 256, 384, 512))


def world_stage(config: EncyclopediaConfig, corpus: CorpusConfig, seed: int):
  """The seed's world: its pretraining documents (also the vocabulary corpus) and stats."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    paths = write_documents(stage_dir, world, corpus, seed)
    return {"dir": stage_dir, "stats": world.stats(), **paths}
  return run


def _evaluation_questions(world: EncyclopediaWorld, settings: "WorldEvalConfig", hops: int
                          ) -> list[QAPair]:
  """The held-out questions the evaluation asks (first wording), per hop count."""
  return world.qa(split="heldout", hops=hops, variant=0)[:settings.max_questions]


def hint_paragraphs(world: EncyclopediaWorld, setting: str, seed: int
                    ) -> list[tuple[str, str, int, str]]:
  """The paragraphs a hint-data setting writes questions for (see `HintDataConfig`).

  'strict' keeps the training entities' paragraphs that state no held-out fact: a
  training entity's paragraph may state a held-out entity's fact too (a company's
  paragraph naming a held-out founder), and those are left out as well."""
  paragraphs = list(world.paragraphs())
  held_out_evidence = {tuple(loc) for q in world.qa(split="heldout", hops=1)
                       for loc in q.hop_evidence[0]}
  strict = [p for p in paragraphs
            if world.split_of(p[0]) == "train" and tuple(p[:3]) not in held_out_evidence]
  if setting == "strict":
    return strict
  if setting != "corpus":
    raise ValueError(f"unknown hint-data setting {setting!r}; expected one of {HINT_SETTINGS}")
  rng = np.random.default_rng([seed, 11])
  return [paragraphs[i] for i in sorted(rng.permutation(len(paragraphs))[:len(strict)])]


def hint_overlap(world: EncyclopediaWorld, settings: "WorldEvalConfig",
                 targets: Sequence[tuple[str, str, int]], questions: Sequence[str]
                 ) -> dict[str, int]:
  """How much of the evaluation a hint fine-tuning set has seen, per hop count:
  evaluation questions whose gold paragraph (the held-out subject's own, the one a
  recitation should recall) is a fine-tuning target; those with any paragraph stating
  one of their facts among the targets (a two-hop question's second fact may be a
  training entity's); and generated questions equal to an evaluation question after
  normalisation."""
  targets = set(targets)
  norm = lambda text: normalize_answer(text, WORLD_CONVENTION)  # noqa: E731
  out: dict[str, int] = {}
  for hops in (1, 2):
    asked = _evaluation_questions(world, settings, hops)
    evaluation = {norm(q.question) for q in asked}
    out[f"{hops}-hop: gold paragraph is a target"] = sum(
        tuple(q.hop_evidence[0][0]) in targets for q in asked)
    out[f"{hops}-hop: some evidence paragraph is a target"] = sum(
        any(tuple(loc) in targets for hop in q.hop_evidence for loc in hop) for q in asked)
    out[f"{hops}-hop: generated question equals an evaluation question"] = sum(
        norm(q) in evaluation for q in questions)
  return out


def hint_data_stage(config: EncyclopediaConfig, corpus: CorpusConfig, hint_data: HintDataConfig,
                    setting: str, model: TransformerConfig, recite: ReciteConfig,
                    settings: WorldEvalConfig, mesh_fn, rules, seed: int):
  """Questions written by the pretrained model for the setting's paragraphs -> data."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    exemplars = _exemplars(world, 1, corpus.shots, seed)
    reciter = Reciter(_sampler(results["pretrain"]["workdir"], model,
                               results["vocabulary"]["model"], settings, mesh_fn(), rules),
                      exemplars, recite, convention=WORLD_CONVENTION)
    paragraphs = hint_paragraphs(world, setting, seed)
    questions = reciter.generate_questions([p[3] for p in paragraphs],
                                           jax.random.key(seed + 7),
                                           hint_data.questions_per_passage)
    pool = [exemplar_for(world, q) for q in world.qa(split="train", hops=1)]
    rng = np.random.default_rng([seed, 9])
    # The fine-tuning documents have as many exemplars as the prompts that use the format.
    count = len(reciter.shots(recite.hinted_shots))
    examples, generated = [], []
    for (title, section, k, text), asked in zip(paragraphs, questions):
      for question in asked:
        shots = [pool[i] for i in rng.choice(len(pool), count, replace=False)]
        examples.append(prompt_lib.hinted_recitation_document(
            shots, question, passage_hint(title, section, k), text))
        generated.append({"hint": passage_hint(title, section, k), "passage": text,
                          "question": question, "names_title": title in question,
                          "entity_split": world.split_of(title)})
    if not examples:
      raise ValueError(f"the pretrained model ({results['pretrain']['workdir']}) wrote no "
                       "question for any paragraph; pretrain it longer")
    replay = [r["text"] for r in read_jsonl(results["world"]["pretrain"])]
    replay = [replay[i] for i in rng.permutation(len(replay))[
        :int(round(hint_data.replay * len(examples)))]]
    if hint_data.replay_passages:
      replay += passage_documents(world)
    docs = examples + replay
    path = fs.join(stage_dir, "hint_finetune.jsonl")
    if is_writer() and not fs.exists(path):
      write_jsonl(path, [{"text": docs[i]} for i in rng.permutation(len(docs))])
      write_jsonl(fs.join(stage_dir, "questions.jsonl"), generated)
    overlap = hint_overlap(world, settings, [p[:3] for p in paragraphs],
                           [g["question"] for g in generated])
    return {"hint_finetune": path, "setting": setting, "paragraphs": len(paragraphs),
            "held-out entity paragraphs": sum(world.split_of(p[0]) != "train"
                                              for p in paragraphs),
            "examples": len(examples), "replay": len(replay), "overlap": overlap,
            "names_title": float(np.mean([g["names_title"] for g in generated]))
            if generated else 0.0}
  return run


def _diagnostics(reciter: Reciter, world: EncyclopediaWorld, questions: list[QAPair],
                 hinted: bool, unseen: EncyclopediaWorld) -> dict[str, float]:
  """Where recitation can fail, on the evaluation's single-hop questions: the passage
  recalled from its gold hint (memorisation), the gold hint (and its title: the right
  entity) written for the question (greedy; in the hinted format after hint
  fine-tuning), the passage recalled from the question and its gold hint in the hinted
  format (hinted recitation's second step), the answer read from the gold
  passage (reading, in each answer layout), and the answer read from the passage of a
  world no training document came from (`unseen`: reading with nothing memorised to
  fall back on)."""
  exemplars = [exemplar_for(world, q) for q in questions]
  passages = reciter.greedy([prompt_lib.passage_prompt([], e.hints[0]) for e in exemplars],
                            reciter.config.recitation_tokens, reciter.config.recitation_stop)
  hinted_shots = reciter.shots(reciter.config.hinted_shots)
  hint_prompt = ((lambda q: prompt_lib.hinted_recite_prompt(hinted_shots, q)) if hinted
                 else (lambda q: prompt_lib.hint_prompt(reciter.exemplars, q)))
  hints = reciter.greedy([hint_prompt(q.question) for q in questions],
                         reciter.config.hint_tokens)
  title = lambda hint: hint.split(HINT_SEPARATOR, 1)[0].strip()  # noqa: E731

  def share(texts: Sequence[str], golds: Sequence[str], key=str.strip) -> float:
    return float(np.mean([key(t) == key(g) for t, g in zip(texts, golds)]))
  gold_passages = [e.passages[0] for e in exemplars]
  gold_hints = [e.hints[0] for e in exemplars]
  out = {
      "passage recalled from its hint": share(passages, gold_passages),
      "gold hint written": share(hints, gold_hints),
      "gold hint's title written": share(hints, gold_hints, title),
  }
  # The passage from the question and its gold hint, in the hint fine-tuning format.
  recalled = reciter.greedy(
      [prompt_lib.hinted_recite_prompt(hinted_shots, q.question, e.hints[0])
       for q, e in zip(questions, exemplars)],
      reciter.config.recitation_tokens, reciter.config.recitation_stop)
  out["passage recalled from its hint (fine-tuning format)"] = share(recalled, gold_passages)
  out.update(_reading(reciter, world, questions))
  out.update(_reading(reciter, unseen, unseen.qa(hops=1, variant=0)[:len(questions)],
                      "an unseen world's passage", layouts=("paper",)))
  return out


def _reading(reciter: Reciter, world: EncyclopediaWorld, questions: list[QAPair],
             source: str = "the gold passage", layouts: Sequence[str] = prompt_lib.ANSWER_LAYOUTS
             ) -> dict[str, float]:
  """The answer read from the gold passage(s), in each answer layout."""
  exemplars = [exemplar_for(world, q) for q in questions]
  out = {}
  for layout in layouts:
    answers = reciter.greedy([prompt_lib.answer_prompt(reciter.exemplars, e.passages,
                                                       q.question, layout)
                              for e, q in zip(exemplars, questions)],
                             reciter.config.answer_tokens)
    out[f"answer read from {source} ({layout} layout)"] = float(np.mean(
        [world.judge(q, prompt_lib.clean_answer(a)) for a, q in zip(answers, questions)]))
  return out


def two_hop_path_shares(world: EncyclopediaWorld, questions: list[QAPair],
                        results: Sequence[QuestionResult], budget: int,
                        count_tokens: Callable[[str], int]) -> dict[str, float]:
  """Per sampled path of multiple recitation: whether recitation 1 is the first hop's
  gold passage, whether recitation 2 is the second hop's (all paths, and paths whose
  first is right), whether the answer is right when both are, when recitation 1 is the
  gold passage and that passage states the answer (a first hop's paragraph often names
  its bridge entity's own fact: 'Forgigis is a city in Bresdasmar'), and when the
  recitations state the answer at all; whether the recitations reach 95% of the token
  budget (`budget` tokens, counted by `count_tokens` on the continuation they form: a
  path cut by the budget); and the share of questions whose first gold passage states
  the answer."""
  paths, answer_in_first = [], 0   # one record per sampled path
  for q, result in zip(questions, results):
    gold = exemplar_for(world, q).passages
    in_first = any(a in gold[0] for a in q.answers)
    answer_in_first += in_first
    for path in result.paths:
      recited = path.recitations
      paths.append({
          "first": len(recited) > 0 and recited[0] == gold[0],
          "second": len(recited) > 1 and recited[1] == gold[1],
          "in_first": in_first, "right": world.judge(q, path.answer),
          "holds": any(a in " ".join(recited) for a in q.answers),
          "full": bool(recited) and count_tokens(
              prompt_lib.join_recitations(recited)) >= 0.95 * budget})

  def share(hit: Callable[[dict], bool], among: Callable[[dict], bool] = lambda p: True
            ) -> float:
    pool = [p for p in paths if among(p)]
    return sum(bool(hit(p)) for p in pool) / max(len(pool), 1)

  both = lambda p: p["first"] and p["second"]
  return {
      "paths: recitation 1 is hop 1's gold passage": share(lambda p: p["first"]),
      "paths: recitation 2 is hop 2's gold passage": share(lambda p: p["second"]),
      "paths: recitation 2 right when recitation 1 is": share(
          lambda p: p["second"], lambda p: p["first"]),
      "paths: answer right when both recitations are": share(lambda p: p["right"], both),
      "questions: hop 1's gold passage states the answer": answer_in_first / max(
          len(questions), 1),
      "paths: answer right when recitation 1 is gold and states it": share(
          lambda p: p["right"], lambda p: p["first"] and p["in_first"]),
      "paths: the recitations state the answer": share(lambda p: p["holds"]),
      "paths: answer right when the recitations state it": share(
          lambda p: p["right"], lambda p: p["holds"]),
      "paths: recitations at the token budget": share(lambda p: p["full"]),
  }


def two_hop_diagnostics(reciter: Reciter, world: EncyclopediaWorld, questions: list[QAPair],
                        results: Sequence[QuestionResult]) -> dict[str, float]:
  """Where multiple recitation fails on two-hop questions: reading from the two gold
  passages (each answer layout) and `two_hop_path_shares` (the budget is the
  reciter's `multi_recitation_tokens`)."""
  vocab = reciter.sampler.vocab
  return {**_reading(reciter, world, questions),
          **two_hop_path_shares(world, questions, results, reciter.multi_recitation_tokens,
                                lambda text: len(vocab.encode(text)))}


MODELS = {"pretrain": "pretrained", "hint_finetune_strict": "hint-FT strict",
          "hint_finetune_corpus": "hint-FT corpus"}
# (label, method of `recite.METHODS`, kind) per hop count; kind 'baseline' or
# 'recitation' (what the headline compares).
BASELINES = (
    ("direct", "direct", "baseline"),
    ("direct (self-consistency)", "direct_sc", "baseline"),
    ("chain of thought", "chain_of_thought", "baseline"),
    ("chain of thought (self-consistency)", "chain_of_thought_sc", "baseline"),
)
SINGLE_HOP = BASELINES + (
    ("recite", "recite", "recitation"),
    ("diversified", "diversified", "recitation"),
    ("hinted recite", "hinted_recite", "recitation"),
)
TWO_HOP = BASELINES + (("multi-recite", "multi_recite", "recitation"),)
# The recitation method each model's headline names in advance: the prompted one for
# the pretrained model, the fine-tuned format after hint fine-tuning.
HEADLINE_RECITATION = {"pretrain": "recite", "hint_finetune_strict": "hinted recite",
                       "hint_finetune_corpus": "hinted recite"}


def eval_stage(config: EncyclopediaConfig, corpus: CorpusConfig, model: TransformerConfig,
               recite: ReciteConfig, settings: WorldEvalConfig, models: Sequence[str], mesh_fn,
               rules, seed: int):
  """Every method on held-out questions (first wording): single-hop for each model,
  two-hop for the pretrained model, at each path count."""
  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    world = _seed_world(config, seed)
    mesh = mesh_fn()
    rows, analyses, diagnostics = [], {}, {}
    plan = [(stage, 1, m) for stage in models for m in SINGLE_HOP]
    plan += [("pretrain", 2, m) for m in TWO_HOP]
    reciters: dict[tuple[str, int], Reciter] = {}
    samplers: dict[str, Sampler] = {}
    for index, (stage, hops, (label, method, kind)) in enumerate(plan):
      if stage not in samplers:
        samplers[stage] = _sampler(results[stage]["workdir"], model,
                                   results["vocabulary"]["model"], settings, mesh, rules)
      if (stage, hops) not in reciters:
        reciters[stage, hops] = Reciter(samplers[stage],
                                        _exemplars(world, hops, corpus.shots, seed), recite,
                                        convention=WORLD_CONVENTION)
      reciter = reciters[stage, hops]
      questions = _evaluation_questions(world, settings, hops)
      if hops == 1 and stage not in diagnostics:
        diagnostics[stage] = _diagnostics(reciter, world, questions,
                                          hinted=stage != "pretrain",
                                          unseen=skill_world(world, corpus.skill_worlds))
      records = [{"question": q.question, "answers": list(q.answers), "hops": hops}
                 for q in questions]
      # Every method of a model and hop count samples from the same key (compute-matched
      # draws); the models share it too.
      out, curve = run_method(reciter, method, records, jax.random.key(seed * 1000 + hops),
                              settings.path_counts, settings.resamples, seed)
      if hops == 2 and method == "multi_recite":
        diagnostics["pretrain, two-hop"] = two_hop_diagnostics(reciter, world, questions, out)
      name = f"{MODELS[stage]} / {hops}-hop / {label}"
      path = fs.join(stage_dir, f"{stage}_{hops}hop_{label.replace(' ', '_')}.jsonl"
                     .replace("(", "").replace(")", ""))
      if is_writer() and not fs.exists(path):
        write_jsonl(path, [r.to_dict() for r in out])
      scores = analysis.scores(out)
      row = {"model": stage, "hops": hops, "method": label, "kind": kind,
             "sampled": method in SAMPLED, **scores, "em_by_paths": curve}
      rows.append(row)
      if any(p.recitations for r in out for p in r.paths):
        analyses[name] = {**analysis.error_analysis(out), **analysis.path_table(out)}
      print(f"[align_jax] seed {seed} ({index + 1}/{len(plan)}) {name}: EM {scores['em']:.3f}",
            flush=True)
    return {"rows": rows, "analysis": analyses, "diagnostics": diagnostics}
  return run


def write_documents(directory: str, world: EncyclopediaWorld, corpus: CorpusConfig, seed: int
                    ) -> dict[str, str]:
  """pretrain.jsonl: the documents, which the vocabulary is also trained on."""
  path = fs.join(directory, "pretrain.jsonl")
  if is_writer() and not fs.exists(path):
    write_jsonl(path, [{"text": d} for d in training_documents(
        world, corpus, np.random.default_rng(seed))])
  return {"pretrain": path, "vocab_corpus": path}


def seed_pipeline(workdir: str, model: TransformerConfig, world: EncyclopediaConfig,
                  corpus: CorpusConfig, pretrain: TrainingSchedule, hint_data: HintDataConfig,
                  hint_finetune: TrainingSchedule, vocab_size: int, recite: ReciteConfig,
                  settings: WorldEvalConfig, mesh_fn, rules, seed: int) -> dict[str, Any]:
  """Runs one seed's stages, world to eval, in `workdir` and returns their results."""
  common = {"model": config_record(model), "seed": seed}
  stages = [
      Stage("world", world_stage(world, corpus, seed),
            {"world": config_record(world), "corpus": config_record(corpus), "seed": seed}),
      Stage("vocabulary", vocabulary_stage(vocab_size, **WORLD_VOCABULARY),
            {"vocab_size": vocab_size, "options": WORLD_VOCABULARY}),
      Stage("pretrain", training_stage(model, pretrain, "lm", "pretrain", None, "plain", mesh_fn,
                                       rules, seed), {**common, "schedule": config_record(pretrain)}),
  ]
  for setting in hint_data.settings:
    stages += [
        Stage(f"hint_data_{setting}",
              hint_data_stage(world, corpus, hint_data, setting, model, recite, settings,
                              mesh_fn, rules, seed),
              {**common, "hint_data": config_record(hint_data), "setting": setting,
               "recite": config_record(recite)}),
        Stage(f"hint_finetune_{setting}",
              training_stage(model, hint_finetune, "lm", "hint_finetune", "pretrain", "plain",
                             mesh_fn, rules, seed, data_stage=f"hint_data_{setting}"),
              {**common, "schedule": config_record(hint_finetune), "setting": setting}),
    ]
  models = ["pretrain"] + [f"hint_finetune_{s}" for s in hint_data.settings]
  stages.append(Stage("eval", eval_stage(world, corpus, model, recite, settings, models,
                                         mesh_fn, rules, seed),
                      {**common, "recite": config_record(recite),
                       "settings": config_record(settings), "models": models}))
  return Pipeline(workdir, stages).run()


def _paired(values_a: Sequence[float], values_b: Sequence[float]) -> dict[str, Any]:
  """Paired difference over seeds: mean, sample std, standard error, and whether the mean
  exceeds two standard errors."""
  diff = np.asarray(values_a, np.float64) - np.asarray(values_b, np.float64)
  std = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
  se = std / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
  return {"mean": float(diff.mean()), "std": std, "se": se,
          "beats": bool(len(diff) > 1 and diff.mean() > 2 * se)}


def headline_comparisons(per_seed: Mapping[int, Mapping[str, Any]], most: int
                         ) -> list[dict[str, Any]]:
  """Per model and hop count: its named recitation method against its best
  non-recitation method (highest mean EM over seeds) at `most` paths (greedy methods:
  their one path), paired by seed."""
  seeds = list(per_seed)
  first = per_seed[seeds[0]]["eval"]["rows"]

  def ems(model, hops, method):
    return [next(r["em"] for r in per_seed[s]["eval"]["rows"]
                 if (r["model"], r["hops"], r["method"]) == (model, hops, method))
            for s in seeds]
  out = []
  for model, hops in dict.fromkeys((r["model"], r["hops"]) for r in first):
    recitation = HEADLINE_RECITATION[model] if hops == 1 else "multi-recite"
    baselines = [r["method"] for r in first
                 if (r["model"], r["hops"], r["kind"]) == (model, hops, "baseline")]
    best = max(baselines, key=lambda m: np.mean(ems(model, hops, m)))
    sampled = next(r["sampled"] for r in first
                   if (r["model"], r["hops"], r["method"]) == (model, hops, best))
    out.append({"model": model, "hops": hops, "recitation": recitation,
                "baseline": best if sampled else f"{best} (greedy, one path)",
                "recitation EM": ems(model, hops, recitation),
                "baseline EM": ems(model, hops, best),
                **_paired(ems(model, hops, recitation), ems(model, hops, best))})
  return out


def _at(row: Mapping[str, Any], paths: int) -> float | None:
  """A row's EM at `paths` voting paths (greedy rows: one path only)."""
  for point in row["em_by_paths"]:
    if point["paths"] == paths:
      return point["em_mean"]
  return None


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]],
                       seconds: float, path_counts: Sequence[int]) -> str:
  """report.md: the headline comparison, the like-for-like EM/F1 table at each path
  count, the hint-data overlap, EM by paths (PNG), the error analysis, the diagnostics,
  training curves and stage times."""
  figures = fs.join(workdir, "report")
  fs.makedirs(figures)
  seeds = list(per_seed)
  most = max(path_counts)
  first = per_seed[seeds[0]]

  def same_rows(row):
    return [next(r for r in per_seed[s]["eval"]["rows"]
                 if (r["model"], r["hops"], r["method"]) == (row["model"], row["hops"],
                                                           row["method"])) for s in seeds]
  table, lines = [], {}  # lines: per (model, hops), one PNG each
  for row in first["eval"]["rows"]:
    same = same_rows(row)
    entry = {"model": MODELS[row["model"]], "hops": row["hops"], "method": row["method"],
             "n": row["n"]}
    for k in path_counts:
      values = [_at(r, k) for r in same]
      entry[f"EM@{k}"] = mean_std(values) if None not in values else "—"
    entry["F1"] = mean_std([r["f1"] for r in same])
    entry.update({f"EM seed {s}": r["em"] for s, r in zip(seeds, same)})
    table.append(entry)
    group = lines.setdefault((row["model"], row["hops"]), [])
    if row["sampled"]:
      points = np.array([[p["em_mean"] for p in r["em_by_paths"]] for r in same])
      group.append((row["method"], list(path_counts), list(points.mean(0)),
                    list(points.std(0))))
    else:  # a greedy method: one path, drawn as a dashed level
      group.append((f"baseline: {row['method']} (greedy)", list(path_counts),
                    [float(np.mean([r["em"] for r in same]))] * len(path_counts), None))
  heads = headline_comparisons(per_seed, most)
  head_lines = []
  for h in heads:
    verdict = ("beats it by more than two standard errors" if h["beats"]
               else "does NOT beat it by more than two standard errors")
    head_lines.append(
        f"- **{MODELS[h['model']]}, {h['hops']}-hop**: {h['recitation']} ({most} paths) "
        f"{np.mean(h['recitation EM']):.3f} vs the best compute-matched non-recitation "
        f"method, {h['baseline']}, "
        f"{np.mean(h['baseline EM']):.3f}: difference {h['mean']:+.3f} (std {h['std']:.3f}, "
        f"standard error {h['se']:.3f} over {len(seeds)} seeds): recitation {verdict}.")
  strict = next((h for h in heads if (h["model"], h["hops"]) == ("hint_finetune_strict", 1)),
                None)
  pretrained = next((h for h in heads if (h["model"], h["hops"]) == ("pretrain", 1)), None)
  if strict is not None and pretrained is not None:
    # Fine-tuning changes the baselines too: set the fine-tuned model's recitation against
    # the pretrained model's best non-recitation method as well.
    across = _paired(strict["recitation EM"], pretrained["baseline EM"])
    head_lines.append(
        f"- Across models: hint-FT strict {strict['recitation']} minus the pretrained "
        f"model's {pretrained['baseline']}: {across['mean']:+.3f} (standard error "
        f"{across['se']:.3f}); the strict model's own best baseline is "
        f"{np.mean(strict['baseline EM']):.3f}, the pretrained model's "
        f"{np.mean(pretrained['baseline EM']):.3f}.")
  gold_key, unseen_key = ("answer read from the gold passage (paper layout)",
                          "answer read from an unseen world's passage (paper layout)")
  reading = [(MODELS[stage], [per_seed[s]["eval"]["diagnostics"][stage] for s in seeds])
             for stage in MODELS if stage in first["eval"]["diagnostics"]]
  if reading and all(unseen_key in d for _, ds in reading for d in ds):
    head_lines.append(
        "- Reading (paper layout), the answer from the held-out gold passage vs from a "
        "passage of a world no training document came from (nothing memorised to fall "
        "back on): " + "; ".join(
            f"{name} {np.mean([d[gold_key] for d in ds]):.3f} vs "
            f"{np.mean([d[unseen_key] for d in ds]):.3f}" for name, ds in reading) + ".")
  goal = ("" if strict is None else
          "The goal (strict held-out, hint-FT strict model: recitation above the same "
          "model's best compute-matched non-recitation method by more than two standard "
          f"errors) is **{'met' if strict['beats'] else 'not met'}**.\n\n")

  overlap_rows = []
  for name, result in first.items():
    if name.startswith("hint_data_"):
      entry = {"setting": result["setting"]}
      for key in ("paragraphs", "held-out entity paragraphs", "examples"):
        entry[key] = mean_std([per_seed[s][name][key] for s in seeds])
      for key in result["overlap"]:
        entry[key] = mean_std([per_seed[s][name]["overlap"][key] for s in seeds])
      overlap_rows.append(entry)

  analysis_rows = []
  for key in first["eval"]["analysis"]:
    shares = {c: [per_seed[s]["eval"]["analysis"][key][c] for s in seeds]
              for c in first["eval"]["analysis"][key]}
    entry = {"method": key, **{c: float(np.mean(v)) for c, v in shares.items()}}
    entry["sum of classes"] = sum(entry[c] for c in analysis.ERROR_CLASSES)
    analysis_rows.append(entry)
  figure_links = []
  for (model, hops), group in lines.items():
    name = f"em_by_paths_{model}_{hops}hop.png"
    plot_lines(fs.join(figures, name), group,
               f"{MODELS[model]}, {hops}-hop: EM by paths (mean ± std over seeds)",
               "sampled paths", "exact match", logx=True, xticks=path_counts)
    figure_links.append(f"![{MODELS[model]}, {hops}-hop](report/{name})")
  diagnostics = first["eval"]["diagnostics"]

  def diagnostic_table(stages: Sequence[str]) -> str:
    rows = [{"model": MODELS.get(stage, stage),
             **{k: mean_std([per_seed[s]["eval"]["diagnostics"][stage][k] for s in seeds])
                for k in diagnostics[stage]}} for stage in stages]
    return markdown_table(rows, ["model"] + list(dict.fromkeys(
        k for stage in stages for k in diagnostics[stage])))
  single_stages = [stage for stage in diagnostics if stage in MODELS]
  two_hop_stages = [stage for stage in diagnostics if stage not in MODELS]
  training = [name for name in first if name == "pretrain" or name.startswith("hint_finetune_")]
  plot_curves(fs.join(figures, "loss.png"),
              [(fs.join(per_seed[s][stage]["workdir"], "metrics.jsonl"), "loss",
                f"seed {s} {stage}") for s in seeds for stage in training],
              "Training loss", "loss", logy=True)
  times = []
  for s in seeds:
    seed_dir = fs.dirname(per_seed[s]["world"]["dir"])
    record = {"seed": s}
    stage_times = stage_seconds(seed_dir, [n for n in per_seed[s] if n != "seed"])
    record.update({name: round(value, 1) for name, value in stage_times.items()})
    record["total"] = round(sum(v for k, v in record.items() if k != "seed"), 1)
    times.append(record)
  setup = {"world": first["world"]["stats"],
           **{name: {k: v for k, v in result.items() if k in ("examples", "replay",
                                                                "names_title")}
              for name, result in first.items() if name.startswith("hint_data_")}}
  table_columns = (["model", "hops", "method", "n"] + [f"EM@{k}" for k in path_counts]
                   + ["F1"] + [f"EM seed {s}" for s in seeds])
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax RECITE on the encyclopedia world", [
      ("What ran", "Per seed: an encyclopedia world (that seed's entities); a tiny model "
                   "pretrained from scratch on every paragraph under its passage hint, on "
                   "few-shot QA documents of the training entities in every prompt format, "
                   "and on reading / hint documents of other worlds; then two hint "
                   "fine-tuned copies, each on question -> hint -> passage examples whose "
                   "questions the pretrained model wrote itself: **strict** (questions only "
                   "about training entities' paragraphs) and **corpus** (the paper's "
                   "setting: paragraphs drawn from the whole corpus, held-out entities' "
                   "included). Every question below is about a held-out entity. Every "
                   "sampled method draws the same number of paths (T = 0.7); EM at 1 and 5 "
                   "paths votes over random subsets of the paths sampled for the largest "
                   "count (diversified methods re-answer from the subset's hints)."),
      ("Headline", goal + "\n".join(head_lines) + "\n\nWall time per seed (all stages): "
       + ", ".join(f"seed {t['seed']} {t['total']:.0f} s" for t in times)
       + f"; this invocation {seconds:.0f} s."),
      ("Exact match by method, model and number of paths (held-out entities, mean ± std "
       "over seeds)", "Greedy methods have one path; F1 is at the most paths.\n\n"
       + markdown_table(table, table_columns)),
      ("Hint fine-tuning data and its overlap with the evaluation (mean ± std over seeds)",
       markdown_table(overlap_rows, list(overlap_rows[0]) if overlap_rows else ["setting"])),
      ("EM by number of paths", "\n\n".join(figure_links)),
      ("Error analysis (share of questions; mean over seeds)", markdown_table(
          analysis_rows, ["method", *analysis.ERROR_CLASSES, "sum of classes"])),
      ("Per-path table (share of paths answered one by one; mean over seeds)",
       markdown_table([r for r in analysis_rows if any(
           r[f"recited={a},correct={c}"] for a in (True, False) for c in (True, False))],
                      ["method"] + [f"recited={r},correct={c}" for r in (True, False)
                                    for c in (True, False)])),
      ("Where recitation can fail (held-out)", diagnostic_table(single_stages)),
      ("Where multiple recitation fails (two-hop, held-out; share of paths or questions)",
       diagnostic_table(two_hop_stages) if two_hop_stages else "No two-hop evaluation."),
      ("Training loss", "![training loss](report/loss.png)"),
      ("Stage seconds", markdown_table(times, list(times[0]))),
      ("Set-up (first seed)", "```\n" + json.dumps(setup, indent=2) + "\n```"),
  ])


def recite_world(workdir: str, model: TransformerConfig,
                 world: EncyclopediaConfig = EncyclopediaConfig(),
                 corpus: CorpusConfig = CorpusConfig(),
                 pretrain: TrainingSchedule = TrainingSchedule(steps=700, learning_rate=3e-3),
                 hint_data: HintDataConfig = HintDataConfig(),
                 hint_finetune: TrainingSchedule = TrainingSchedule(steps=100,
                                                                    learning_rate=1e-3),
                 vocab_size: int = 1024,
                 recite: ReciteConfig = ReciteConfig(recitation_tokens=64,
                                                     recitation_stop="\n", passage_shots=0),
                 settings: WorldEvalConfig = WorldEvalConfig(), seeds: Sequence[int] = (0,),
                 mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Runs the experiment for each seed in WORKDIR/seed_<k>/ and writes WORKDIR/report.md."""
  mesh_fn = (lambda: mesh) if mesh is not None else create_mesh
  return run_seeds(
      workdir, seeds,
      lambda seed_dir, seed: seed_pipeline(
          seed_dir, model, world, corpus, pretrain, hint_data, hint_finetune, vocab_size,
          recite, settings, mesh_fn, rules, seed),
      lambda per_seed, seconds: write_world_report(workdir, per_seed, seconds,
                                                   settings.path_counts),
      lambda results: [{k: v for k, v in r.items() if k != "em_by_paths"}
                       for r in results["eval"]["rows"]],
      ["model", "method", "hops", "n", "em", "f1"])
