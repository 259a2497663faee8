"""The principle-following reward model's label rule on hand cases: the deciding
principle, negation, overrides, noise and the number of principles drawn."""

import numpy as np
import pytest

from align_jax.methods.salmon import labels as lb

P = [lb.Principle("concise", "Be brief.", "Ramble."),
     lb.Principle("honest", "Admit what you do not know.", "Make things up."),
     lb.Principle("kind", "Be kind.", "Be rude.")]


def test_the_largest_score_decides_and_negation_flips_it():
  scores = [0.1, -2.0, 0.5]
  assert lb.decide(scores, [0, 1, 2], [False, False, False]) == (-1, 1)  # honest: second
  assert lb.decide(scores, [0, 1, 2], [False, True, False]) == (1, 1)    # negated: first
  assert lb.decide(scores, [0, 2], [False, True]) == (-1, 2)             # kind, negated
  assert lb.decide([0.0, 0.0, 0.0], [0, 2], [True, False]) is None


class _Fixed:
  """An rng whose draws are given (geometric k, choice, random() values in order)."""

  def __init__(self, k, chosen, randoms):
    self.k, self.chosen, self.randoms = k, chosen, list(randoms)

  def geometric(self, p):
    return self.k

  def choice(self, n, size, replace):
    assert size == len(self.chosen) and not replace
    return np.array(self.chosen)

  def random(self):
    return self.randoms.pop(0)


def test_label_pair_records_the_principles_noise_and_overrides():
  config = lb.LabelConfig(noise=0.1, disclaimer_loses=0.5)
  # k=2: principles 1 (negated: 0.2 < 0.5) and 0 (0.7: positive); no noise (0.9).
  record = lb.label_pair("q", "A1", "A2", [0.3, -2.0, 0.0], P, _Fixed(2, [1, 0], [0.2, 0.7, 0.9]),
                         config)
  assert (record["chosen"], record["rejected"]) == ("A1", "A2")
  assert record["principles"] == ["Make things up.", "Be brief."]
  assert record["decider"] == "honest" and record["overridden"] is None
  assert record["names"] == ["honest", "concise"] and record["negated"] == [True, False]
  assert record["first_won"] is True
  # The same draw with noise (0.05 < 0.1) flips the label.
  flipped = lb.label_pair("q", "A1", "A2", [0.3, -2.0, 0.0], P,
                          _Fixed(2, [1, 0], [0.2, 0.7, 0.05]), config)
  assert flipped["chosen"] == "A2"
  # Another language always loses, whatever the principles said.
  lang = lb.label_pair("q", "A1", "A2", [0.3, -2.0, 0.0], P, _Fixed(2, [1, 0], [0.2, 0.7, 0.9]),
                       config, other_language=(True, False))
  assert lang["chosen"] == "A2" and lang["overridden"] == "language"
  # The disclaimer loses when the coin says so (0.3 < 0.5), not otherwise (0.8).
  out = lb.label_pair("q", "A1", "A2", [0.3, -2.0, 0.0], P,
                      _Fixed(2, [1, 0], [0.2, 0.7, 0.9, 0.3]), config, disclaimer=(True, False))
  assert out["chosen"] == "A2" and out["overridden"] == "disclaimer"
  kept = lb.label_pair("q", "A1", "A2", [0.3, -2.0, 0.0], P,
                       _Fixed(2, [1, 0], [0.2, 0.7, 0.9, 0.8]), config, disclaimer=(True, False))
  assert kept["chosen"] == "A1" and kept["overridden"] is None


def test_draws_are_geometric_capped_and_distinct():
  rng = np.random.default_rng(0)
  config = lb.LabelConfig(geometric_p=0.2, max_principles=8)
  sizes = []
  for _ in range(4000):
    chosen, negated = lb.draw(20, rng, config)
    assert len(set(chosen)) == len(chosen) == len(negated)
    sizes.append(len(chosen))
  sizes = np.array(sizes)
  assert sizes.min() == 1 and sizes.max() == 8
  # P(k = 1) = 0.2 and P(k = 8) = P(K >= 8) = 0.8^7 for the capped geometric.
  assert abs(np.mean(sizes == 1) - 0.2) < 0.03
  assert abs(np.mean(sizes == 8) - 0.8 ** 7) < 0.03
  assert abs(np.mean([lb.draw(3, rng, config)[1][0] for _ in range(2000)]) - 0.5) < 0.05
  assert max(len(lb.draw(3, rng, config)[0]) for _ in range(200)) == 3   # no more than exist
  with pytest.raises(ValueError, match="LabelConfig.noise"):
    lb.LabelConfig(noise=1.5)


def test_reward_model_input_reads_the_principles_after_the_response(tmp_path):
  """Training (a preference record with its suffix) and the reward term (text_input with
  the principles) give the same ids; the suffix is never a training target."""
  from align_jax.data.tasks import tokenize_record
  from align_jax.data.vocab import train_sentencepiece
  from align_jax.rewards.terms import RewardBatch
  from hf_fixtures import words_corpus
  vocab = train_sentencepiece(words_corpus(300) + [lb.PRINCIPLES_HEADER + " Be brief."],
                              str(tmp_path / "sp"), 300)
  record = lb.label_pair("the red dog", "a big tree", "the dog", [0.3, -2.0, 0.0], P,
                         _Fixed(2, [1, 0], [0.2, 0.7, 0.9]))
  assert record["suffix"] == ("\n\nJudge the response above by these principles:\n"
                              "- Make things up.\n- Be brief.")
  features = tokenize_record(record, "preference", vocab, chat_template="plain")
  batch = RewardBatch(prompts=["the red dog"], responses=[record["chosen"]],
                      response_lengths=np.array([3]), finished=np.array([True]),
                      metadata=[{"principles": record["principles"]}])
  built = lb.reward_input("plain")(batch, vocab)[0]
  assert features["chosen_tokens"].tolist() == built
  suffix = [int(i) for i in vocab.encode(record["suffix"])]
  assert built[-len(suffix):] == suffix
  mask = features["chosen_loss_mask"].tolist()
  assert mask[-len(suffix):] == [0] * len(suffix) and sum(mask) > 0
