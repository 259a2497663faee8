"""The stages of Self-Align, over the shared generation stage (`generate_to_jsonl`).

Each builder returns a `Stage` fn; every sampling step writes through `generate_to_jsonl`,
so a stage killed part-way resumes after its last complete chunk, and the files a stage
derives from its generations are rewritten whole from them (never appended to), so a
rerun never duplicates a row. What a stage prompts with comes from a `PromptSet`: the
principles world has one (`align_jax.methods.self_align.world`), a real model another
(`align_jax.methods.self_align.dromedary`).

  self_instruct      grows a pool of queries from seed tasks: each prompt shows `shown`
                     of the pool; a candidate is kept by `InstructionFilter` (length,
                     first character, blocked words, ROUGE-L with the pool); rounds.
  red_team           topic-guided red-teaming: per question type, grows topics by
                     sampling with EOS banned (`clean_topic`, `merge_topics`), balances
                     the types, then writes one question per (type, topic) after
                     `shown` seed examples of the type.
  principle_answers  answers every query under the principles and exemplars, thoughts
                     first, apologetic openings biased away; `filter_answers` cleans
                     them; writes the engraving data (query -> answer, nothing else).
  verbose_answers    the engraved model answers every query under the verbose prompt,
                     with the sampler's n-gram and frequency penalties (or, with
                     `elaborate`, continues its own prompt-free answer under it); answers
                     of at least `min_chars` characters are the verbose-cloning data.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from align_jax import fs
from align_jax.data.instructions import (InstructionFilter, balance_types, clean_topic,
                                         filter_instructions, merge_topics)
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.data.vocab import continued_text, token_after
from align_jax.methods.self_align.answers import AnswerFormat, clean_answer, exemplar_ngrams
from align_jax.pipeline.generation import generate_to_jsonl
from align_jax.pipeline.stages import is_writer
from align_jax.sampling import SamplingConfig
from align_jax.sampling.engine import Sampler

SamplerFn = Callable[[Mapping[str, Any]], Sampler]


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """How each stage prompts the model; every prompt ends where the model writes.

  instructions(shown tasks) -> a prompt whose continuation is one new task (a line);
  topics(type, shown topics) -> a prompt whose continuation is one new topic (a line);
  question(type, [(topic, question)] examples, topic) -> one question about the topic;
  principled(query) -> principles, exemplars, the query and the thoughts turn's marker;
  plain(query) -> the query alone, ending with the answer turn's marker;
  verbose(query) -> the verbose prompt with the query, ending likewise;
  turn_text(text) -> a query or answer as a training record holds it for the chat
    template the engraving trains with (the world's `lines` template: after a space).
  """
  instructions: Callable[[Sequence[str]], str]
  topics: Callable[[str, Sequence[str]], str]
  question: Callable[[str, Sequence[tuple[str, str]], str], str]
  principled: Callable[[str], str]
  plain: Callable[[str], str]
  verbose: Callable[[str], str]
  turn_text: Callable[[str], str] = str


@dataclasses.dataclass(frozen=True)
class SelfInstructConfig:
  """Self-instruct: `rounds` of `prompts_per_round` prompts, each showing `shown` tasks
  of the pool (seed tasks and those kept so far), sampled at `temperature` / `top_p`."""
  rounds: int = 3
  prompts_per_round: int = 256
  shown: int = 5
  max_new_tokens: int = 48
  temperature: float = 1.0
  top_p: float = 0.98
  chunk_size: int = 128
  filter: InstructionFilter = InstructionFilter()


@dataclasses.dataclass(frozen=True)
class RedTeamConfig:
  """Topic-guided red-teaming: `topic_rounds` of `topic_prompts` prompts per type (each
  showing up to `shown` of the type's topics), types cut to `topics_per_type` (None: the
  fewest any type has), then one question per (type, topic) after `shown` examples."""
  topic_rounds: int = 2
  topic_prompts: int = 32
  shown: int = 5
  topics_per_type: int | None = None
  max_topic_words: int = 3
  max_topic_tokens: int = 12
  max_question_tokens: int = 48
  temperature: float = 1.0
  top_p: float = 0.98
  chunk_size: int = 128


@dataclasses.dataclass(frozen=True)
class AnswerConfig:
  """Principle-driven answers: sampling (T=0.5, top-p 0.95, `max_new_tokens`), the words
  that get `discourage_bias` where the vocabulary holds them as one token after other
  text (apologetic openings; the stage's result lists the biased ids) and the answer
  filters (`AnswerFormat`, its `leak_words` n-grams of the exemplars)."""
  max_new_tokens: int = 256
  temperature: float = 0.5
  top_p: float = 0.95
  discouraged: tuple[str, ...] = (" Sorry", " sorry", " apologize", " apologise",
                                  " unfortunately", " Unfortunately")
  discourage_bias: float = -100.0
  stop_strings: tuple[str, ...] = ("\n\n",)
  form: AnswerFormat = AnswerFormat()
  chunk_size: int = 128


@dataclasses.dataclass(frozen=True)
class VerboseConfig:
  """Verbose cloning's regeneration: T=0.3, top-p 0.7, frequency penalty and an n-gram
  ban in the sampler; answers shorter than `min_chars` characters are dropped.

  elaborate: instead of answering afresh under the verbose prompt (the method's way), the
    engraved model first answers each query with no prompt (greedy, `brief.jsonl`), and
    the verbose prompt continues that answer: the verbose answer is the brief one with
    what the model adds to it, so the prompt changes the length and not the content (for
    a model whose answers the long verbose prompt changes; see the principles world). A
    query whose brief answer is empty or was cut at the token limit is answered afresh."""
  max_new_tokens: int = 256
  temperature: float = 0.3
  top_p: float = 0.7
  frequency_penalty: float = 0.3
  no_repeat_ngram_size: int = 6
  min_chars: int = 128
  stop_strings: tuple[str, ...] = ("\n\n",)
  chunk_size: int = 128
  elaborate: bool = False


def _first_line(completions: list[dict[str, Any]]) -> str:
  text = completions[0]["text"].strip() if completions else ""
  return text.splitlines()[0].strip() if text else ""


def self_instruct_stage(config: SelfInstructConfig, seed_tasks: Sequence[str],
                        prompts: PromptSet, sampler_fn: SamplerFn, seed: int):
  """Writes `instructions.jsonl` ({"text", "round"}: the kept machine-written tasks,
  seed tasks not included) and the filter's counts per round."""
  if len(seed_tasks) < 1:
    raise ValueError("self-instruct needs at least one seed task")
  sampling = SamplingConfig(max_new_tokens=config.max_new_tokens,
                            temperature=config.temperature, top_p=config.top_p,
                            stop_strings=("\n",))

  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    sampler = sampler_fn(results)
    pool, kept_rows, counts = list(seed_tasks), [], []
    for r in range(config.rounds):
      rng = np.random.default_rng([seed, r])
      records = [{"round": r, "shown": [pool[int(i)] for i in rng.choice(
          len(pool), size=min(config.shown, len(pool)), replace=False)]}
          for _ in range(config.prompts_per_round)]
      path = fs.join(stage_dir, f"round_{r}.jsonl")
      generate_to_jsonl(path, records, lambda rec: prompts.instructions(rec["shown"]),
                        sampler, sampling, seed=seed * 1000 + r, chunk_size=config.chunk_size,
                        settings={"pool": len(pool)}, desc=f"self-instruct round {r}")
      candidates = [_first_line(row["completions"]) for row in read_jsonl(path)]
      kept, count = filter_instructions(candidates, pool, config.filter)
      pool += kept
      kept_rows += [{"text": t, "round": r} for t in kept]
      counts.append({"round": r, "generated": len(candidates), **count})
    out = fs.join(stage_dir, "instructions.jsonl")
    if is_writer():
      write_jsonl(out, kept_rows, overwrite=True)
    return {"instructions": out, "kept": len(kept_rows), "rounds": counts}
  return run


def sum_rounds(rounds: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  """Self-instruct's per-round counts summed over rounds."""
  total: dict[str, int] = {}
  for r in rounds:
    for k, v in r.items():
      if k != "round":
        total[k] = total.get(k, 0) + int(v)
  return total


def red_team_stage(config: RedTeamConfig, types: Mapping[str, Sequence[tuple[str, str]]],
                   prompts: PromptSet, sampler_fn: SamplerFn, seed: int):
  """`types`: question type -> seed (topic, question) examples. Writes `topics.json`
  and `questions.jsonl` ({"text", "type", "topic"})."""
  stop = SamplingConfig(temperature=config.temperature, top_p=config.top_p,
                        stop_strings=("\n",), max_new_tokens=config.max_topic_tokens)

  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    sampler = sampler_fn(results)
    eos = sampler.eos_id
    topic_sampling = dataclasses.replace(
        stop, logit_bias=((eos, -1e9),) if eos is not None else ())  # EOS banned
    topics = {t: merge_topics([], [topic for topic, _ in examples])
              for t, examples in types.items()}
    sampled = {t: 0 for t in types}
    for r in range(config.topic_rounds):
      rng = np.random.default_rng([seed, 100 + r])
      records = []
      for t in types:
        for _ in range(config.topic_prompts):
          shown = [topics[t][int(i)] for i in rng.permutation(len(topics[t]))[:config.shown]]
          records.append({"type": t, "shown": shown})
      path = fs.join(stage_dir, f"topics_round_{r}.jsonl")
      generate_to_jsonl(path, records, lambda rec: prompts.topics(rec["type"], rec["shown"]),
                        sampler, topic_sampling, seed=seed * 1000 + 100 + r,
                        chunk_size=config.chunk_size, desc=f"red-team topics round {r}")
      for row in read_jsonl(path):
        sampled[row["type"]] += 1
        topic = clean_topic(row["completions"][0]["text"], config.max_topic_words)
        if topic is not None:
          topics[row["type"]] = merge_topics(topics[row["type"]], [topic])
    grown = {t: len(v) for t, v in topics.items()}
    balanced = balance_types(topics, config.topics_per_type)
    rng = np.random.default_rng([seed, 200])
    records = []
    for t, examples in types.items():
      for topic in balanced[t]:
        shown = [examples[int(i)] for i in rng.permutation(len(examples))[:config.shown]]
        records.append({"type": t, "topic": topic, "shown": shown})
    path = fs.join(stage_dir, "question_samples.jsonl")
    generate_to_jsonl(path, records,
                      lambda rec: prompts.question(rec["type"], rec["shown"], rec["topic"]),
                      sampler, dataclasses.replace(stop, max_new_tokens=config.max_question_tokens),
                      seed=seed * 1000 + 200, chunk_size=config.chunk_size,
                      desc="red-team questions")
    questions = [{"text": _first_line(row["completions"]), "type": row["type"],
                  "topic": row["topic"]} for row in read_jsonl(path)]
    questions = [q for q in questions if q["text"]]
    out = {"topics": fs.join(stage_dir, "topics.json"),
           "questions": fs.join(stage_dir, "questions.jsonl")}
    if is_writer():
      fs.write_atomically(out["topics"], json.dumps(balanced, indent=2, ensure_ascii=False))
      write_jsonl(out["questions"], questions, overwrite=True)
    return {**out, "topics_sampled": sampled, "topics_grown": grown,
            "topics_per_type": len(next(iter(balanced.values()), [])),
            "question_count": len(questions)}
  return run


def gather_queries(results: Mapping[str, Any], held_out: Sequence[str]
                   ) -> tuple[list[dict[str, Any]], dict[str, int]]:
  """The queries self-instruct and red-teaming wrote, de-duplicated, without any that
  equals a held-out evaluation request (counted)."""
  held = {" ".join(t.split()) for t in held_out}
  rows = ([{"text": r["text"], "source": "self_instruct"}
           for r in read_jsonl(results["self_instruct"]["instructions"])]
          + [{"text": r["text"], "source": "red_team", "type": r["type"]}
             for r in read_jsonl(results["red_team"]["questions"])])
  seen, queries, counts = set(), [], {"written": len(rows), "duplicates": 0, "held_out": 0}
  for row in rows:
    key = " ".join(row["text"].split())
    if key in seen:
      counts["duplicates"] += 1
    elif key in held:
      counts["held_out"] += 1
    else:
      seen.add(key)
      queries.append({**row, "text": key})
  counts["queries"] = len(queries)
  return queries, counts


def _token_bias(sampler: Sampler, words: Sequence[str], bias: float) -> tuple:
  """(id, bias) for each word that is a single token where it follows other text (its
  id is what encoding "x" + word adds to encoding "x"). A word split into pieces is left
  alone: biasing its first piece (a bare space, one letter) would bias every word that
  starts with it."""
  ids = {token_after(sampler.vocab, "x", word) for word in words} - {None}
  return tuple((i, bias) for i in sorted(ids))


def principle_answer_stage(config: AnswerConfig, prompts: PromptSet,
                           exemplar_texts: Sequence[str], held_out: Sequence[str],
                           sampler_fn: SamplerFn, seed: int):
  """Writes `answers.jsonl` (every output with its cleaned answer or None and the
  filters that acted) and `engrave.jsonl` ({"prompt": query, "response": answer})."""
  form = config.form

  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    sampler = sampler_fn(results)
    queries, query_counts = gather_queries(results, held_out)
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        top_p=config.top_p, stop_strings=config.stop_strings,
        logit_bias=_token_bias(sampler, config.discouraged, config.discourage_bias))
    path = fs.join(stage_dir, "samples.jsonl")
    generate_to_jsonl(path, queries, lambda rec: prompts.principled(rec["text"]), sampler,
                      sampling, seed=seed * 1000 + 300, chunk_size=config.chunk_size,
                      desc="principle-driven answers")
    leaked = exemplar_ngrams(exemplar_texts, form.leak_words)
    counts = {f: 0 for f in ("format", "user_turn", "repeated", "empty", "leak", "kept")}
    answers, engrave = [], []
    for row in read_jsonl(path):
      output = f"{form.thoughts}{row['completions'][0]['text']}"
      answer, acted = clean_answer(output, leaked, form)
      for name in acted:
        counts[name] += 1
      counts["kept"] += answer is not None
      answers.append({"query": row["text"], "source": row["source"], "output": output,
                      "answer": answer, "filters": acted})
      if answer is not None:
        engrave.append({"prompt": prompts.turn_text(row["text"]),
                        "response": prompts.turn_text(answer)})
    if not engrave:
      raise ValueError(f"{path}: none of {len(answers)} principle-driven answers passed the "
                       f"filters ({counts}); the base model does not write the thoughts turn "
                       "and answer turn the prompt's exemplars show (train it longer?)")
    out = {"answers": fs.join(stage_dir, "answers.jsonl"),
           "engrave": fs.join(stage_dir, "engrave.jsonl")}
    if is_writer():
      write_jsonl(out["answers"], answers, overwrite=True)
      write_jsonl(out["engrave"], engrave, overwrite=True)
    return {**out, "queries": query_counts, "filters": counts,
            "biased_tokens": [i for i, _ in sampling.logit_bias]}
  return run


def verbose_answer_stage(config: VerboseConfig, prompts: PromptSet, held_out: Sequence[str],
                         sampler_fn: SamplerFn, seed: int, form: AnswerFormat = AnswerFormat()):
  """The engraved model answers every query under the verbose prompt (with `elaborate`,
  continues its prompt-free answer from `brief.jsonl` there); writes `answers.jsonl` and
  `clone.jsonl` (answers of at least `min_chars` characters, cut at a new user turn)."""
  sampling = SamplingConfig(max_new_tokens=config.max_new_tokens,
                            temperature=config.temperature, top_p=config.top_p,
                            frequency_penalty=config.frequency_penalty,
                            no_repeat_ngram_size=config.no_repeat_ngram_size,
                            stop_strings=config.stop_strings)

  def text_of(row: Mapping[str, Any]) -> str:
    return row["completions"][0]["text"].split(form.user)[0].strip()

  def run(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    queries, _ = gather_queries(results, held_out)
    sampler = sampler_fn(results)

    def verbose_prompt(row: Mapping[str, Any]) -> str | list[int]:
      prompt, brief = prompts.verbose(row["text"]), row.get("brief", "")
      if not brief:
        return prompt
      if isinstance(prompt, str):
        return prompt + prompts.turn_text(brief)
      # Token ids (a chat template's assistant turn): the brief answer's tokens after
      # them, as an SFT example's response follows its prompt.
      return [*prompt, *(int(i) for i in sampler.vocab.encode(prompts.turn_text(brief)))]

    def answer_of(row: Mapping[str, Any]) -> str:
      brief = row.get("brief", "")
      if not brief:
        return text_of(row)
      rest = continued_text(sampler.vocab, prompts.turn_text(brief), row["completions"][0])
      return (brief + rest).split(form.user)[0].strip()

    if config.elaborate:
      brief_path = fs.join(stage_dir, "brief.jsonl")
      generate_to_jsonl(brief_path, queries, lambda rec: prompts.plain(rec["text"]), sampler,
                        SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=0.0,
                                       stop_strings=config.stop_strings),
                        seed=seed * 1000 + 401, chunk_size=config.chunk_size,
                        desc="brief answers")
      # A brief answer cut at the token limit is answered afresh, as is an empty one.
      queries = [{**q, "brief": text_of(row) if row["completions"][0]["finished"] else ""}
                 for q, row in zip(queries, read_jsonl(brief_path), strict=True)]
    path = fs.join(stage_dir, "samples.jsonl")
    generate_to_jsonl(path, queries, verbose_prompt, sampler, sampling, seed=seed * 1000 + 400,
                      chunk_size=config.chunk_size, settings={"elaborate": config.elaborate},
                      desc="verbose answers")
    rows, clone, short = [], [], 0
    for row in read_jsonl(path):
      answer = answer_of(row)
      keep = len(answer) >= config.min_chars
      short += not keep
      rows.append({"query": row["text"], "answer": answer, "kept": keep,
                   **({"brief": row["brief"]} if config.elaborate else {})})
      if keep:
        clone.append({"prompt": prompts.turn_text(row["text"]),
                      "response": prompts.turn_text(answer)})
    if not clone:
      raise ValueError(f"{path}: none of {len(rows)} verbose answers has {config.min_chars} "
                       "characters or more; nothing to distil")
    out = {"answers": fs.join(stage_dir, "answers.jsonl"),
           "clone": fs.join(stage_dir, "clone.jsonl")}
    if is_writer():
      write_jsonl(out["answers"], rows, overwrite=True)
      write_jsonl(out["clone"], clone, overwrite=True)
    return {**out, "generated": len(rows), "too_short": short, "kept": len(clone),
            "elaborated": config.elaborate}
  return run
