"""PPO trainer: the properties that catch the known PPO bugs, on a tiny real set-up.

A tiny policy is fine-tuned on arithmetic-world answers, a reward model is trained on
(right, hedged) pairs, and PPO runs through the shared loop with both on disk, as
`gin/runs/ppo.gin` would run them.
"""

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

from align_jax.data.vocab import train_sentencepiece
from align_jax.models import TransformerConfig
from align_jax.training import LoopConfig, OptimizerConfig
from align_jax.training.lm_trainer import DataConfig, train_lm, train_reward_model
from align_jax.ppo import PPOConfig, assemble_rollouts, make_ppo_step, run_ppo, setup_ppo
from align_jax.worlds.arithmetic import ArithmeticConfig, build_world, judge

CONFIG = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=48, pad_id=0, eos_id=1, bos_id=2)
PPO = PPOConfig(rollout_batch_size=8, mini_batch_size=4, num_epochs=2, max_prompt_len=24,
                max_new_tokens=8, kl_coef=0.1)
QUIET = dict(progress_bar=False, async_checkpoints=False)


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("ppo")
  world = build_world(ArithmeticConfig(max_operand=19, num_sft=200, num_rl=64, num_eval=16))
  sft = world.sft_records()
  texts = world.texts() + [f"User: {r['prompt']}\nAssistant: {r['response']}" for r in sft]
  train_sentencepiece(texts, str(root / "spm"), 300, extra_options={"hard_vocab_limit": False,
                                                                    "split_digits": True})
  vocab = str(root / "spm.model")
  _write(root / "sft.jsonl", sft)
  pairs = [{"prompt": r["prompt"], "chosen": r["answer"], "rejected": r["answer"] + " or 7"}
           for r in world.records("rl")]
  _write(root / "pairs.jsonl", pairs)
  prompts = _write(root / "prompts.jsonl", world.records("rl"))
  small = dict(batch_size=8, seq_len=32)
  train_lm(str(root / "sft"), CONFIG, DataConfig(kind="sft", train_files=str(root / "sft.jsonl"),
                                                 **small), vocab,
           OptimizerConfig(learning_rate=3e-3, warmup_steps=2, total_steps=30),
           LoopConfig(total_steps=30, checkpoint_every=30, **QUIET))
  train_reward_model(str(root / "reward"), CONFIG,
                     DataConfig(kind="preference", train_files=str(root / "pairs.jsonl"),
                                pack=False, **small), vocab,
                     OptimizerConfig(learning_rate=1e-3, warmup_steps=2, total_steps=10),
                     LoopConfig(total_steps=10, checkpoint_every=10, **QUIET),
                     init_from=str(root / "sft"))
  return {"root": root, "vocab": vocab, "prompts": prompts, "sft": str(root / "sft"),
          "reward": str(root / "reward")}


def _setup(runs, workdir, model=CONFIG, ppo=PPO, steps=1, max_grad_norm=1.0):
  return setup_ppo(str(workdir), model, runs["prompts"], runs["vocab"], runs["sft"],
                   reward_model=runs["reward"], ppo=ppo,
                   optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=0,
                                             decay="constant", max_grad_norm=max_grad_norm),
                   loop=LoopConfig(total_steps=steps, checkpoint_every=steps, **QUIET))


def _host(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def _tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_the_first_ratio_is_exactly_one_with_the_head_in_chunks(runs, tmp_path, monkeypatch):
  # 16 rows a chunk: the scoring pass (8 rollouts) and the loss (mini-batches of 4) run
  # the output head a few response positions at a time, rematerialised; the
  # differentiated pass still equals the scoring pass to the bit.
  from align_jax.ppo import rollouts
  monkeypatch.setattr(rollouts, "head_chunk_rows", lambda vocab_size: 16)
  _, metrics = run_ppo(str(tmp_path), _setup(runs, tmp_path))
  assert metrics["policy/first_ratio_mean"] == 1.0
  assert metrics["policy/first_abs_log_ratio"] == 0.0
  assert metrics["objective/kl"] == 0.0


def test_one_update_moves_policy_and_value_only(runs, tmp_path):
  setup = _setup(runs, tmp_path)
  reference, reward = _host(setup.reference_params), _host(setup.reward_params)
  initial = _host(setup.trainable)
  state, metrics = run_ppo(str(tmp_path), setup)
  # First mini-batch of the first epoch: the policy has not moved yet, so every ratio is
  # exactly 1 and nothing is clipped.
  assert metrics["policy/first_abs_log_ratio"] == 0.0
  assert metrics["policy/first_ratio_mean"] == 1.0
  assert metrics["policy/first_approx_kl"] == 0.0
  assert metrics["policy/first_clip_fraction"] == 0.0
  # Policy == reference on the first rollout: the KL penalty is exactly zero.
  assert metrics["objective/kl"] == 0.0
  assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
  after = _host(state.params)
  assert not _tree_equal(after["policy"], initial["policy"])
  assert not _tree_equal(after["value"], initial["value"])
  assert _tree_equal(_host(setup.reference_params), reference)
  assert _tree_equal(_host(setup.reward_params), reward)
  for name in ("time/generation_s", "time/scoring_s", "time/train_s", "reward/total",
               "rollout/response_length", "rollout/eos_rate", "value/explained_variance",
               "objective/entropy", "policy/clip_fraction", "value/loss"):
    assert name in metrics, name
  # The run wrote the final policy where an LM run's parameters would be.
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert any("reward/reward_model" in r for r in records)


def _rollouts(runs, workdir, ppo=PPO, **options):
  setup = _setup(runs, workdir, ppo=ppo, **options)
  state = setup.init_state()
  source = setup.make_batches(0)
  source.observe(state)
  return setup, state, next(source)


def test_update_is_invariant_to_micro_batches(runs, tmp_path):
  """Plain SGD, so each parameter change is proportional to its gradient: Adam's first
  step divides by |g| and turns float rounding in a near-zero gradient into a change of
  up to the learning rate."""
  setup, state, batch = _rollouts(runs, tmp_path)
  optimizer = optax.sgd(1e-3)
  results = []
  for micro in (1, 2, 4):
    config = dataclasses.replace(PPO, num_micro_batches=micro)
    step = jax.jit(make_ppo_step(setup.policy, setup.value, config, optimizer,
                                 PPO.max_prompt_len))
    new_state, metrics = step(state, batch, setup.frozen)
    results.append((_host(new_state.params), {k: float(v) for k, v in metrics.items()}))
  for params, metrics in results[1:]:
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(results[0][0])):
      np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
    np.testing.assert_allclose(metrics["loss"], results[0][1]["loss"], atol=1e-6, rtol=1e-6)


def test_the_value_model_steps_at_its_own_learning_rate(runs, tmp_path):
  """One update (one epoch, one mini-batch) from the same state and rollouts, with one
  optimizer (both models at 1e-3) and with the value model's own (at 2e-2). Adam's first
  step is the learning rate times g / (|g| + eps), so without clipping the policy moves
  exactly as before and the value model 20 times as far."""
  single = dataclasses.replace(PPO, num_epochs=1, mini_batch_size=PPO.rollout_batch_size)
  moves = {}
  for name, ppo in (("one", single),
                    ("own", dataclasses.replace(single, value_learning_rate=2e-2))):
    setup, state, batch = _rollouts(runs, tmp_path / name, ppo=ppo, max_grad_norm=None)
    start = _host(state.params)
    new_state, _ = jax.jit(setup.step_fn)(state, batch, setup.frozen)
    moves[name] = jax.tree.map(lambda a, b: a - b, _host(new_state.params), start)
  own, one = moves["own"], moves["one"]
  for x, y in zip(jax.tree.leaves(own["policy"]), jax.tree.leaves(one["policy"])):
    np.testing.assert_array_equal(x, y)
  value_own, value_one = jax.tree.leaves(own["value"]), jax.tree.leaves(one["value"])
  assert max(np.abs(x).max() for x in value_one) > 0
  for x, y in zip(value_own, value_one):
    np.testing.assert_allclose(x, 20 * y, rtol=0, atol=2e-5)
  with pytest.raises(ValueError, match="value_learning_rate"):
    dataclasses.replace(PPO, value_learning_rate=0.0)


def test_rollouts_score_lands_on_eos_inside_the_mask(runs, tmp_path):
  setup, _, batch = _rollouts(runs, tmp_path)
  source = setup.sources[-1]
  mask, rewards = batch["response_mask"], batch["token_rewards"]
  lengths = mask.sum(axis=1).astype(int)
  assert (lengths == source.last["lengths"]).all()
  tokens = batch["tokens"][:, PPO.max_prompt_len:]
  for row in range(len(mask)):
    last = lengths[row] - 1
    if source.last["finished"][row]:
      assert tokens[row, last] == CONFIG.eos_id
    # KL is zero on the first rollout, so the only nonzero reward is the score.
    expected = np.zeros_like(rewards[row])
    expected[last] = source.last["scores"][row]
    np.testing.assert_allclose(rewards[row], expected, atol=1e-6)
  assert (rewards[mask == 0] == 0).all()
  # The rows are the gold judge's business too: texts decode the response tokens.
  assert all(isinstance(judge(t, "1"), bool) for t in source.last["texts"])


def test_lora_policy_and_value_share_one_frozen_base(runs, tmp_path):
  model = dataclasses.replace(CONFIG, lora_rank=4, lora_targets=("q", "v"))
  setup = _setup(runs, tmp_path, model=model)
  base = setup.frozen["policy"]
  assert setup.reference_params is base
  assert setup.frozen["value"]["backbone"] is base
  before = _host(base)
  trainable = _host(setup.trainable)
  state, metrics = run_ppo(str(tmp_path), setup)
  assert metrics["policy/first_abs_log_ratio"] == 0.0
  assert _tree_equal(_host(base), before)
  leaves = jax.tree_util.tree_leaves_with_path(state.params["policy"])
  assert leaves and all("lora" in jax.tree_util.keystr(p) for p, _ in leaves)
  assert not _tree_equal(_host(state.params["policy"]), trainable["policy"])


def test_a_lora_reward_model_loads_merged_over_its_base(runs, tmp_path):
  """A LoRA reward run stores adapters and head only; PPO's loader rebuilds it over the
  SFT run it started from, folds the adapters in, and scores as the unmerged model does."""
  from align_jax.models import (Transformer, TransformerWithHead, is_lora_path, merge_params,
                                split_params)
  from align_jax.parallel import DEFAULT_RULES, create_mesh
  from align_jax.training.checkpoints import restore_params
  from align_jax.rewards.reward_model import last_token_scores, load_reward_model
  from align_jax.training.runs import placed_abstract_params, restore_run_params

  lora = dataclasses.replace(CONFIG, lora_rank=4, lora_targets=("q", "v", "up"))
  run = str(tmp_path / "lora_reward")
  train_reward_model(run, lora, DataConfig(kind="preference", train_files=str(
      runs["root"] / "pairs.jsonl"), pack=False, batch_size=8, seq_len=32), runs["vocab"],
                     OptimizerConfig(learning_rate=3e-2, warmup_steps=0, total_steps=4),
                     LoopConfig(total_steps=4, checkpoint_every=4, **QUIET),
                     init_from=runs["sft"])
  mesh = create_mesh()
  module, merged, _ = load_reward_model(run, CONFIG, mesh, DEFAULT_RULES)
  assert module.config.lora_rank == 0

  # The unmerged model: the SFT base plus the run's adapters and head, run through the
  # adapters' own forward path.
  base = restore_run_params(runs["sft"], Transformer(CONFIG), mesh, DEFAULT_RULES)
  lora_module = TransformerWithHead(lora)
  abstract = placed_abstract_params(lora_module, mesh, DEFAULT_RULES)
  trained, _ = restore_params(f"{run}/checkpoints", split_params(
      abstract, lambda path: is_lora_path(path) or path[0] == "head")[0])
  unmerged = merge_params(trained, {"backbone": base})

  rng = np.random.RandomState(0)
  batch = {"tokens": rng.randint(3, 300, (3, 20)).astype(np.int32),
           "positions": np.tile(np.arange(20, dtype=np.int32), (3, 1)),
           "segment_ids": np.ones((3, 20), np.int32)}
  np.testing.assert_allclose(last_token_scores(module, merged, batch),
                             last_token_scores(lora_module, unmerged, batch), atol=1e-5)
  # The adapters moved the targeted kernels (so the check above is not base vs base),
  # left the others, and the head is the run's.
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(merged["backbone"]),
                                                   jax.tree.leaves(base))]
  assert 0 < sum(changed) < len(changed)
  assert _tree_equal(_host(merged["head"]), _host(trained["head"]))


def test_a_lora_sft_run_is_a_policy_init(runs, tmp_path):
  """PPO starts from a LoRA SFT run as from the merged model: its reference policy's
  logits are the unmerged adapters' over the SFT base."""
  from align_jax.models import Transformer, is_lora_path, merge_params, split_params
  from align_jax.parallel import DEFAULT_RULES, create_mesh
  from align_jax.training.checkpoints import restore_params
  from align_jax.training.runs import placed_abstract_params, restore_run_params

  lora = dataclasses.replace(CONFIG, lora_rank=4, lora_targets=("k", "o", "down"))
  run = str(tmp_path / "lora_sft")
  train_lm(run, lora, DataConfig(kind="sft", train_files=str(runs["root"] / "sft.jsonl"),
                                 batch_size=8, seq_len=32), runs["vocab"],
           OptimizerConfig(learning_rate=3e-2, warmup_steps=0, total_steps=3),
           LoopConfig(total_steps=3, checkpoint_every=3, **QUIET), init_from=runs["sft"])
  setup = setup_ppo(str(tmp_path / "ppo"), CONFIG, runs["prompts"], runs["vocab"], run,
                    reward_model=runs["reward"], ppo=PPO,
                    loop=LoopConfig(total_steps=1, checkpoint_every=1, **QUIET))
  mesh = create_mesh()
  base = restore_run_params(runs["sft"], Transformer(CONFIG), mesh, DEFAULT_RULES)
  trained, _ = restore_params(f"{run}/checkpoints", split_params(
      placed_abstract_params(Transformer(lora), mesh, DEFAULT_RULES), is_lora_path)[0])
  tokens = np.random.RandomState(1).randint(3, 300, (2, 16)).astype(np.int32)
  np.testing.assert_allclose(
      setup.policy.apply({"params": setup.reference_params}, tokens),
      Transformer(lora).apply({"params": merge_params(trained, base)}, tokens), atol=1e-5)
  assert not np.allclose(setup.policy.apply({"params": base}, tokens),
                         setup.policy.apply({"params": setup.reference_params}, tokens))


def test_assemble_rollouts_hand_case():
  out = assemble_rollouts([[5, 6], [7]], np.array([[8, 1, 0], [9, 9, 9]]), np.array([2, 3]),
                          start=3, pad_id=0)
  assert out["tokens"].tolist() == [[0, 5, 6, 8, 1, 0], [0, 0, 7, 9, 9, 9]]
  assert out["segment_ids"].tolist() == [[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
  assert out["positions"].tolist() == [[0, 0, 1, 2, 3, 0], [0, 0, 0, 1, 2, 3]]
  assert out["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]


def test_a_resumed_run_continues_like_an_uninterrupted_one(runs, tmp_path):
  # An adaptive KL coefficient: its value must survive the restart with the prompts' position.
  ppo = dataclasses.replace(PPO, target_kl=0.01, kl_horizon=100)
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  run_ppo(str(straight), _setup(runs, straight, ppo=ppo, steps=3))
  run_ppo(str(resumed), _setup(runs, resumed, ppo=ppo, steps=2))
  run_ppo(str(resumed), _setup(runs, resumed, ppo=ppo, steps=3))

  def step3(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return next(r for r in rows if r.get("step") == 3 and "loss" in r)
  a, b = step3(straight), step3(resumed)
  assert a["objective/kl_coef"] != PPO.kl_coef        # the controller did move
  for key in ("objective/kl_coef", "reward/total", "objective/kl", "loss", "value/loss"):
    np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-7, err_msg=key)


_SHARDED_WORKER = """
import json, sys
import jax
from align_jax.parallel import create_mesh
from align_jax.training import LoopConfig, OptimizerConfig
from align_jax.ppo import PPOConfig, run_ppo, setup_ppo
from align_jax.models import TransformerConfig
args = json.loads(sys.argv[1])
assert jax.device_count() == 8
config = TransformerConfig(**args["config"])
ppo = PPOConfig(**args["ppo"])
out = {}
for name, mesh in (("one", create_mesh((1, 1, 1), devices=jax.devices()[:1])),
                   ("sharded", create_mesh((1, 4, 2)))):
  setup = setup_ppo(args["workdir"] + name, config, args["prompts"], args["vocab"], args["sft"],
                    reward_model=args["reward"], ppo=ppo,
                    optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=0,
                                              decay="constant"),
                    loop=LoopConfig(total_steps=1, checkpoint_every=1, progress_bar=False,
                                    async_checkpoints=False),
                    mesh=mesh)
  state, metrics = run_ppo(args["workdir"] + name, setup)
  q = state.params["policy"]["layers_0"]["attention"]["q_kernel"]
  ref = setup.reference_params["layers_0"]["attention"]["q_kernel"]
  rm = setup.reward_params["backbone"]["layers_0"]["attention"]["q_kernel"]
  out[name] = {"metrics": metrics, "policy_spec": str(q.sharding.spec),
               "policy_shard": list(q.addressable_shards[0].data.shape),
               "reference_shard": list(ref.addressable_shards[0].data.shape),
               "reward_shard": list(rm.addressable_shards[0].data.shape)}
print("RESULT" + json.dumps(out))
"""


def test_four_roles_shard_on_one_mesh_and_match_one_device(runs, tmp_path):
  import os
  import subprocess
  import sys
  args = {"config": {k: getattr(CONFIG, k) for k in (
              "vocab_size", "num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim",
              "mlp_dim", "max_seq_len", "pad_id", "eos_id", "bos_id")},
          "ppo": {k: getattr(PPO, k) for k in ("rollout_batch_size", "mini_batch_size",
                                               "num_epochs", "max_prompt_len", "max_new_tokens",
                                               "kl_coef")},
          "workdir": str(tmp_path / "run_"), "prompts": runs["prompts"], "vocab": runs["vocab"],
          "sft": runs["sft"], "reward": runs["reward"]}
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SHARDED_WORKER, json.dumps(args)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  one, sharded = out["one"], out["sharded"]
  # q_kernel [d_model=32, heads=4, head_dim=8]: embed over fsdp (4), heads over tensor (2).
  assert sharded["policy_spec"] == "P('fsdp', 'tensor')"
  assert sharded["policy_shard"] == [8, 2, 8] == sharded["reference_shard"] == \
      sharded["reward_shard"]
  assert one["policy_shard"] == [32, 4, 8]
  for key in ("reward/total", "objective/kl", "rollout/response_length", "loss", "value/loss",
              "policy/first_ratio_mean"):
    np.testing.assert_allclose(sharded["metrics"][key], one["metrics"][key], rtol=1e-4,
                               atol=1e-5, err_msg=key)
