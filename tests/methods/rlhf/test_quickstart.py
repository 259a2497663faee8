"""The quickstart (the RLHF pipeline on one seed) and the RLHF demo (the same over seeds),
each run by its Colab notebook (launch/colab/) with its README command, on a small world
and schedule. The learning result is the full runs' (docs/methods/rlhf.md and
docs/results/)."""

import pytest

from align_jax.data.jsonl import read_jsonl
from align_jax.parallel import create_mesh
from align_jax.pipeline import read_completion
from align_jax.rewards import RewardContext, RewardModelTerm, text_input
from align_jax.rewards.reward_model import batch_from_records
from align_jax.training import read_metrics
from tests.notebooks import execute, outputs, runs_readme_command

SMALL = [
    "--gin.ArithmeticConfig.max_operand=29",
    "--gin.ArithmeticConfig.num_sft=500", "--gin.ArithmeticConfig.num_rl=256",
    "--gin.ArithmeticConfig.num_eval=64",
    "--gin.TransformerConfig.d_model=64", "--gin.TransformerConfig.num_layers=2",
    "--gin.TransformerConfig.head_dim=16", "--gin.TransformerConfig.mlp_dim=192",
    "--gin.sft/TrainingSchedule.steps=120", "--gin.reward/TrainingSchedule.steps=20",
    "--gin.ppo/TrainingSchedule.steps=4", "--gin.rlhf_demo.eval_every=2",
    "--gin.rlhf_demo.eval_prompts=32",
]


@pytest.mark.slow
def test_quickstart_notebook_runs_every_stage_and_writes_its_report(tmp_path):
  assert runs_readme_command("quickstart", "gin/quickstart.gin")
  workdir = tmp_path / "quickstart"
  notebook = execute("quickstart", tmp_path, WORKDIR=str(workdir), OVERRIDES=SMALL)
  assert sorted(p.name for p in workdir.glob("seed_*")) == ["seed_0"]
  evaluated = read_completion(str(workdir / "seed_0"), "eval")["result"]
  rows = {r["policy"]: r for r in evaluated["rows"]}
  assert set(rows) == {"sft", "ppo", "ppo_no_kl"}
  # Accuracies are shares of the 64 held-out problems (sampled: of 4 samples each).
  for r in rows.values():
    assert r["n"] == 64
    assert r["greedy"] * 64 == round(r["greedy"] * 64)
    assert r["sampled"] * 256 == pytest.approx(round(r["sampled"] * 256), abs=1e-6)
  seed_dir = workdir / "seed_0"
  for stage in ("world", "vocabulary", "sft", "preferences", "reward", "ppo", "ppo_no_kl",
                "eval"):
    assert (seed_dir / stage / "COMPLETED.json").exists(), stage
  # The stored normalisation gives the SFT policy's own samples mean 0 and std 1.
  term = RewardModelTerm(str(seed_dir / "reward"), input_builder=text_input("plain"))
  term.setup(RewardContext(mesh=create_mesh()))
  samples = read_jsonl(str(seed_dir / "preferences" / "sft_samples.jsonl"))
  normalised = term(batch_from_records(list(samples)))
  assert abs(normalised.mean()) < 1e-3 and abs(normalised.std() - 1.0) < 1e-3
  with_kl = [r for r in read_metrics(str(seed_dir / "ppo" / "metrics.jsonl")) if "loss" in r]
  without = [r for r in read_metrics(str(seed_dir / "ppo_no_kl" / "metrics.jsonl"))
             if "loss" in r]
  assert [r["step"] for r in with_kl] == [1, 2, 3, 4]
  assert with_kl[0]["objective/kl"] == 0.0          # the first rollout is the reference's
  assert all(r["objective/kl_coef"] == 0.3 for r in with_kl)
  assert all(r["objective/kl_coef"] == 0.0 for r in without)
  gold = [r for r in read_metrics(str(seed_dir / "ppo" / "metrics.jsonl"))
          if "gold/sampled_accuracy" in r]
  assert [r["step"] for r in gold] == [2, 4]
  report = (workdir / "report.md").read_text()
  assert "Gold accuracy across seeds" in report and "| 0 | ppo |" in report
  for name in ("reward", "kl", "length", "gold"):
    assert (workdir / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
  # The notebook shows the report, its four curves and each policy's answers, judged.
  assert len(outputs(notebook, "image/png")) == 4
  printed = "".join(outputs(notebook, "stream"))
  for policy in ("sft", "ppo", "ppo_no_kl"):
    assert f"{policy}:\n" in printed
  assert printed.count(" right\n") + printed.count(" wrong\n") == 3 * 8


@pytest.mark.slow
def test_rlhf_demo_notebook_reports_mean_and_spread_across_seeds(tmp_path):
  assert runs_readme_command("rlhf_demo", "gin/methods/rlhf_demo.gin")
  workdir = tmp_path / "demo"
  notebook = execute("rlhf_demo", tmp_path, WORKDIR=str(workdir), SEEDS=(0, 1),
                     OVERRIDES=SMALL + ["--gin.ppo/TrainingSchedule.steps=2"])
  assert sorted(p.name for p in workdir.glob("seed_*")) == ["seed_0", "seed_1"]
  report = (workdir / "report.md").read_text()
  assert "| 0 | ppo |" in report and "| 1 | ppo |" in report
  ppo = [r["greedy"] for seed in (0, 1)
         for r in read_completion(str(workdir / f"seed_{seed}"), "eval")["result"]["rows"]
         if r["policy"] == "ppo"]
  # The across-seeds row is the mean and the sample spread of the per-seed values.
  mean = sum(ppo) / 2
  assert f"{mean:.3f} ±" in report
  # The reward model's histogram (right against wrong samples) and the PPO curves.
  assert len(outputs(notebook, "image/png")) == 2
  printed = "".join(outputs(notebook, "stream"))
  judged = read_jsonl(str(workdir / "seed_0" / "preferences" / "judged_samples.jsonl"))
  assert f"{sum(len(r['responses']) for r in judged)} samples, " in printed
