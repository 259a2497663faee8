"""RECITE on the encyclopedia world: does reciting help a tiny model answer held-out facts?

Stages (in WORKDIR/<stage>/, resumable, see `align_jax.pipeline`):
  world       the encyclopedia; the pretraining documents; held-out evaluation questions;
              the few-shot exemplars (training entities)
  vocabulary  a sentencepiece vocabulary that keeps newlines (the prompts' separators)
  pretrain    a tiny model trained from scratch on the documents
  eval        direct answering vs recite-and-answer (several path counts) vs
              hint-diversified recitation (single-hop) and multiple recitations
              (two-hop), on held-out entities; EM/F1, the error analysis, EM by paths

Pretraining documents: every paragraph as a `Hint: ... / Recitation: ...` block (the
passage-prompt format, so the model can recite a paragraph from its hint), and, for the
QA pairs of training entities only, few-shot documents in each prompt format (direct,
recite, answer, hint, multi-recitation): `shots` exemplar blocks then the target block.
Held-out entities' facts therefore appear only in their paragraphs: answering them
directly needs knowledge the model holds as passages, reciting first retrieves the
passage and then reads the answer from it, which is what the experiment measures.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from align_jax.data.jsonl import write_jsonl
from align_jax.data.vocab import load_vocabulary
from align_jax.methods.recite import analysis
from align_jax.methods.recite import prompts as prompt_lib
from align_jax.methods.recite.recite import ReciteConfig, Reciter
from align_jax.models import Transformer, TransformerConfig
from align_jax.pipeline import is_writer
from align_jax.quickstart import load_trained
from align_jax.sampling import Sampler
from align_jax.worlds.encyclopedia import EncyclopediaWorld, QAPair, passage_hint

NEWLINE_VOCABULARY = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                      "user_defined_symbols": ["\n"]}


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


def training_documents(world: EncyclopediaWorld, shots: int, rng: np.random.Generator
                       ) -> list[str]:
  """Passage documents for every paragraph and few-shot documents for training QA."""
  docs = [_complete(prompt_lib.passage_prompt([], passage_hint(t, s, k)), text)
          for t, s, k, text in world.paragraphs()]
  pool = {hops: [exemplar_for(world, q) for q in world.qa(split="train", hops=hops)]
          for hops in (1, 2)}
  for hops, exemplars in pool.items():
    for target in exemplars:
      others = [e for e in exemplars if e.question != target.question]
      pick = lambda: [others[i] for i in rng.choice(len(others), shots, replace=False)]  # noqa
      docs.append(_complete(prompt_lib.direct_prompt(pick(), target.question), target.answer))
      docs.append(_complete(prompt_lib.answer_prompt(pick(), target.passages, target.question),
                            target.answer))
      docs.append(_complete(prompt_lib.chain_of_thought_prompt(pick(), target.question),
                            f"{target.reasoning}\nAnswer: {target.answer}"))
      if hops == 1:
        docs.append(_complete(prompt_lib.recite_prompt(pick(), target.question),
                              target.passages[0]))
        docs.append(_complete(prompt_lib.hint_prompt(pick(), target.question), target.hints[0]))
      else:
        docs.append(_complete(prompt_lib.multi_recite_prompt(pick(), target.question),
                              "\n".join([target.passages[0]] + [
                                  f"Recitation {i + 1}: {p}"
                                  for i, p in enumerate(target.passages) if i > 0])))
  return docs


@dataclasses.dataclass(frozen=True)
class WorldEvalConfig:
  shots: int = 2
  path_counts: tuple[int, ...] = (1, 5, 20)
  resamples: int = 5
  max_questions: int = 100          # per hop count, held-out, first wording only
  batch_size: int = 64


def evaluate(workdir: str, world: EncyclopediaWorld, model: TransformerConfig, vocabulary: str,
             run_dir: str, recite: ReciteConfig, settings: WorldEvalConfig, mesh, rules,
             seed: int) -> dict[str, Any]:
  """Runs every method on held-out questions; writes predictions and returns the rows."""
  vocab = load_vocabulary(vocabulary)
  params = load_trained(run_dir, model, vocab, mesh, rules)
  sampler = Sampler(Transformer(model), params, vocab=vocab, mesh=mesh,
                    batch_size=settings.batch_size, length_buckets=(128, 256, 384, 512))
  rng = np.random.default_rng(seed)
  rows, analyses, by_paths = [], {}, {}
  for hops in (1, 2):
    train = world.qa(split="train", hops=hops)
    exemplars = [exemplar_for(world, train[i])
                 for i in rng.choice(len(train), settings.shots, replace=False)]
    reciter = Reciter(sampler, exemplars, recite)
    questions = [q for q in world.qa(split="heldout", hops=hops) if q.variant == 0]
    records = [{"question": q.question, "answers": list(q.answers), "hops": hops}
               for q in questions[:settings.max_questions]]
    methods = {"direct": lambda: reciter.direct(records),
               "chain_of_thought": lambda: reciter.chain_of_thought(records)}
    most = max(settings.path_counts)
    if hops == 1:
      methods[f"recite_{most}"] = lambda: reciter.recite_and_answer(
          records, jax.random.key(seed), most)
      methods["diversified"] = lambda: reciter.diversified(records, jax.random.key(seed + 1))
    else:
      methods[f"multi_recite_{most}"] = lambda: reciter.multi_recite_and_answer(
          records, jax.random.key(seed), most)
    for name, run in methods.items():
      results = run()
      path = os.path.join(workdir, f"{name}_{hops}hop.jsonl")
      if is_writer() and not os.path.exists(path):
        write_jsonl(path, [r.to_dict() for r in results])
      rows.append({"method": name, "hops": hops, **analysis.scores(results)})
      if name.startswith(("recite", "multi")) or name == "diversified":
        analyses[f"{name}/{hops}"] = {**analysis.error_analysis(results),
                                      **analysis.path_table(results)}
      if name.startswith(("recite", "multi")):
        curve = analysis.em_by_paths(results, settings.path_counts, settings.resamples, seed)
        by_paths[f"{name}/{hops}"] = curve
        for point in curve:
          rows.append({"method": f"{name.rsplit('_', 1)[0]}_{point['paths']}", "hops": hops,
                       "em": point["em_mean"], "em_std": point["em_std"], "n": len(results)})
  return {"rows": rows, "analysis": analyses, "em_by_paths": by_paths}


def write_documents(directory: str, world: EncyclopediaWorld, shots: int, seed: int
                    ) -> dict[str, str]:
  docs = training_documents(world, shots, np.random.default_rng(seed))
  paths = {"pretrain": os.path.join(directory, "pretrain.jsonl"),
           "vocab_corpus": os.path.join(directory, "vocab_corpus.jsonl")}
  if is_writer() and not os.path.exists(paths["pretrain"]):
    write_jsonl(paths["pretrain"], [{"text": d} for d in docs])
  if is_writer() and not os.path.exists(paths["vocab_corpus"]):
    write_jsonl(paths["vocab_corpus"], [{"text": d} for d in docs])
  return paths
