"""Batches cut after their longest row (`pad_to_multiple_of`): the losses and gradients of
every trainer's kind equal those of the same batch padded to seq_len, and a reward-model
run with them follows the padded run's losses."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.data.jsonl import write_jsonl
from align_jax.data.pipeline import BatchIterator
from align_jax.models import Transformer, TransformerWithHead, init_params
from align_jax.training import (DataConfig, LoopConfig, OptimizerConfig, dpo_loss_sums,
                                lm_loss_sums, pairwise_loss_sums, process_loss_sums,
                                read_metrics, train_reward_model)
from align_jax.training.dpo import REFERENCE_KEY
from hf_fixtures import write_words_data
from training_fixtures import CONFIG

SEQ_LEN, MULTIPLE = 48, 8


def _tokens(rng, n):
  return rng.integers(3, CONFIG.vocab_size, n).tolist()


def _examples(kind, rng, count=6):
  """`count` examples of `kind` whose lengths vary, the longest well under SEQ_LEN."""
  out = []
  for _ in range(count):
    prompt, response = _tokens(rng, int(rng.integers(2, 6))), int(rng.integers(2, 12))
    if kind == "sft":
      out.append({"tokens": np.array(prompt + _tokens(rng, response)),
                  "loss_mask": np.array([0] * len(prompt) + [1] * response)})
    elif kind == "process":
      labels = rng.integers(-1, 2, response)
      out.append({"tokens": np.array(prompt + _tokens(rng, response)),
                  "label_values": np.array([-1] * len(prompt) + labels.tolist())})
    else:
      other = int(rng.integers(2, 12))
      out.append({"chosen_tokens": np.array(prompt + _tokens(rng, response)),
                  "chosen_loss_mask": np.array([0] * len(prompt) + [1] * response),
                  "rejected_tokens": np.array(prompt + _tokens(rng, other)),
                  "rejected_loss_mask": np.array([0] * len(prompt) + [1] * other)})
  return out


def _first_batches(kind, examples):
  data_kind = "preference" if kind == "dpo" else kind
  make = functools.partial(BatchIterator, examples, kind=data_kind, batch_size=4,
                           seq_len=SEQ_LEN, shuffle=False, pack=False)
  return next(make()), next(make(pad_to_multiple_of=MULTIPLE))


@pytest.mark.parametrize("kind", ["sft", "preference", "process", "dpo"])
def test_a_cut_batch_has_the_padded_batchs_loss_and_gradients(kind):
  rng = np.random.default_rng(0)
  full, cut = _first_batches(kind, _examples(kind, rng))
  lengths = {v.shape[1] for v in cut.values() if v.ndim == 2}
  assert len(lengths) == 1
  (length,) = lengths
  longest = max(int(np.flatnonzero(v.any(0))[-1]) + 1
                for k, v in full.items() if k.endswith("segment_ids"))
  assert length % MULTIPLE == 0 and longest <= length < longest + MULTIPLE < SEQ_LEN
  for k, v in full.items():  # the cut part is padding only; the rest is the same
    if v.ndim == 2:
      np.testing.assert_array_equal(v[:, :length], cut[k])
      assert not v[:, length:].any()
  if kind in ("sft", "dpo"):
    module = Transformer(CONFIG)
    params = init_params(module, jax.random.key(0))
    if kind == "dpo":
      params = {**params, REFERENCE_KEY: init_params(module, jax.random.key(1))}
      loss = functools.partial(dpo_loss_sums, module)
    else:
      loss = functools.partial(lm_loss_sums, module)
  else:
    module = TransformerWithHead(CONFIG)
    params = init_params(module, jax.random.key(0))
    loss = functools.partial(pairwise_loss_sums if kind == "preference" else process_loss_sums,
                             module)

  def value_and_grad(batch):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def total_and_rest(p):
      total, weight, aux = loss(p, batch)
      return total, (weight, aux)
    (total, (weight, aux)), grads = jax.value_and_grad(total_and_rest, has_aux=True)(params)
    return total, weight, aux, grads

  want, got = value_and_grad(full), value_and_grad(cut)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
  assert float(got[1]) == float(want[1]) > 0
  for k in want[2]:
    np.testing.assert_allclose(got[2][k], want[2][k], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got[3]), jax.tree.leaves(want[3])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cut_batches_resume_like_an_uninterrupted_run():
  examples = _examples("preference", np.random.default_rng(1), count=20)
  make = functools.partial(BatchIterator, examples, kind="preference", batch_size=2,
                           seq_len=SEQ_LEN, seed=3, pad_to_multiple_of=4)
  whole = make()
  want = [next(whole) for _ in range(7)]
  resumed = make(start_position=4)
  for expected in want[4:]:
    got = next(resumed)
    assert got.keys() == expected.keys()
    for k in got:
      np.testing.assert_array_equal(got[k], expected[k])
  assert len({b["chosen_segment_ids"].shape[1] for b in want}) > 1  # lengths vary


def test_bad_pad_to_multiple_of_is_refused():
  prompts = [{"prompt_tokens": np.array([5, 6, 7])}]
  with pytest.raises(ValueError, match="left"):
    BatchIterator(prompts, kind="prompt", batch_size=1, seq_len=8, pad_to_multiple_of=4)
  with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1"):
    BatchIterator(_examples("sft", np.random.default_rng(0)), kind="sft", batch_size=1,
                  seq_len=8, pad_to_multiple_of=0)
  with pytest.raises(ValueError, match="DataConfig.pad_to_multiple_of"):
    DataConfig(kind="preference", train_files=("x.jsonl",), pad_to_multiple_of=-8)


def test_a_reward_model_run_on_cut_batches_follows_the_padded_run(tmp_path):
  texts = write_words_data(tmp_path, vocab_size=300)
  rng = np.random.default_rng(0)
  records = [{"prompt": texts[i], "chosen": texts[i + 1][:20], "rejected": texts[i + 2]}
             for i in range(0, 150, 2)]
  data = tmp_path / "pairs.jsonl"
  write_jsonl(str(data), [records[i] for i in rng.permutation(len(records))])
  model = dataclasses.replace(CONFIG, vocab_size=320, max_seq_len=96)
  losses = {}
  for multiple in (None, 16):
    workdir = tmp_path / f"rm_{multiple}"
    train_reward_model(str(workdir), model,
                       DataConfig(kind="preference", train_files=(str(data),), batch_size=8,
                                  seq_len=96, pad_to_multiple_of=multiple),
                       str(tmp_path / "spm.model"),
                       OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=8),
                       LoopConfig(total_steps=8, checkpoint_every=8, progress_bar=False))
    losses[multiple] = [r["loss"] for r in read_metrics(str(workdir / "metrics.jsonl"))
                        if "loss" in r]
  assert len(losses[None]) == 8
  np.testing.assert_allclose(losses[16], losses[None], rtol=1e-3)


def test_a_stage_schedule_records_cutting_only_when_set():
  """Stages record their schedule and refuse to resume under other settings: a schedule
  that does not cut has the record it had before the field existed."""
  from align_jax.models import RopeScaling
  from align_jax.pipeline.builders import TrainingSchedule
  from align_jax.training import config_record
  before = {"steps": 1000, "learning_rate": 1e-3, "warmup_steps": 50, "batch_size": 32,
            "seq_len": 256, "weight_decay": 0.0, "checkpoint_every": 200}
  assert config_record(TrainingSchedule()) == before
  assert config_record(TrainingSchedule(pad_to_multiple_of=128)) == {
      **before, "pad_to_multiple_of": 128}
  data = TrainingSchedule(batch_size=8, seq_len=64, pad_to_multiple_of=16).data(
      "process", ["a.jsonl"], seed=3, pack=False)
  assert (data.kind, data.train_files, data.batch_size, data.seq_len, data.pad_to_multiple_of,
          data.seed, data.pack) == ("process", ("a.jsonl",), 8, 64, 16, 3, False)
  # Otherwise a config's record is what a JSON round trip of dataclasses.asdict gives.
  import json
  for config in (CONFIG, dataclasses.replace(CONFIG, rope_scaling=RopeScaling()),
                 TrainingSchedule(pad_to_multiple_of=64)):
    assert config_record(config) == json.loads(json.dumps(dataclasses.asdict(config)))
