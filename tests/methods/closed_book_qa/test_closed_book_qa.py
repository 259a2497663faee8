"""The closed-book QA pipeline end to end (a smaller world and schedule than the default)."""

import pytest

from align_jax import main as entry
from tests.readme_commands import readme_command

SMALL = [
    "--gin.EncyclopediaConfig.num_people=16", "--gin.EncyclopediaConfig.num_cities=6",
    "--gin.EncyclopediaConfig.num_companies=6",
    "--gin.TransformerConfig.d_model=64", "--gin.TransformerConfig.num_layers=2",
    "--gin.TransformerConfig.head_dim=16", "--gin.TransformerConfig.mlp_dim=192",
    "--gin.pretrain/TrainingSchedule.steps=300", "--gin.pretrain/TrainingSchedule.batch_size=16",
    "--gin.sft/TrainingSchedule.steps=60", "--gin.sft/TrainingSchedule.batch_size=16",
    "--gin.encyclopedia_qa.eval_examples=60", "--gin.LoopConfig.progress_bar=False",
]


@pytest.mark.slow
def test_closed_book_qa_learns_training_facts_and_writes_a_report(tmp_path, capsys):
  workdir = tmp_path / "qs"
  command = (readme_command("gin/methods/closed_book_qa.gin") + [f"--gin.WORKDIR='{workdir}'"]
             + SMALL)
  results = entry.main(command)
  rows = {(r["model"], r["split"], r["hops"]): r for r in results["eval"]["rows"]}
  # Facts of training entities were seen as QA pairs: the fine-tuned model answers most.
  assert rows[("sft", "train", 1)]["em"] >= 0.5
  report = (workdir / "report.md").read_text()
  assert "![training loss](report/loss.png)" in report and "| sft | heldout |" in report
  assert (workdir / "report" / "loss.png").read_bytes()[:4] == b"\x89PNG"
  for stage in ("world", "vocabulary", "pretrain", "sft", "eval", "report"):
    assert (workdir / stage / "COMPLETED.json").exists()
  assert (workdir / "pretrain" / "metrics.jsonl").exists()
  # Rerunning the same command skips every completed stage.
  capsys.readouterr()
  again = entry.main(command)
  out = capsys.readouterr().out
  assert out.count("already completed, skipping") == 6
  assert again["eval"] == results["eval"]
