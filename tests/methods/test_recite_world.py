"""The RECITE world experiment's documents: what the tiny model may learn from."""

import numpy as np

from align_jax.methods.recite import world as recite_world
from align_jax.worlds.encyclopedia import EncyclopediaConfig, build_world, passage_hint


def test_documents_hold_every_passage_and_only_training_questions():
  world = build_world(EncyclopediaConfig.preset("tiny"))
  docs = recite_world.training_documents(world, 2, np.random.default_rng(0))
  paragraphs = list(world.paragraphs())
  passages = [d for d in docs if d.startswith("Hint: ")]
  assert len(passages) == len(paragraphs)
  title, section, k, text = paragraphs[0]
  assert passages[0] == f"Hint: {passage_hint(title, section, k)}\nRecitation: {text}"
  joined = "\n".join(docs)
  for qa in world.qa(split="heldout"):
    assert f"Question: {qa.question}\n" not in joined
  one_hop = world.qa(split="train", hops=1)[0]
  # Each training question appears as a target block in every single-hop format.
  targets = [d.split("\n\n")[-1] for d in docs if d.split("\n\n")[-1].startswith(
      f"Question: {one_hop.question}\n")]
  fields = sorted(t.split("\n")[1].split(":")[0] for t in targets)
  assert fields == ["Answer", "Hint", "Reasoning", "Recitation"]
  exemplar = recite_world.exemplar_for(world, one_hop)
  assert exemplar.hints[0] in joined and one_hop.answers[0] in exemplar.passages[0]
