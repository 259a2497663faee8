"""The reranking benchmark at a tiny size: its report's keys and counts, and align_jax's
PRM scores equal to those of the transformers export (the comparison is of equal work)."""

import json

import pytest

from align_jax.benchmarks import reranking


@pytest.mark.slow
def test_reranking_benchmark_reports_consistent_counts_and_agreeing_scores(capsys):
  report = reranking.main(["--problems", "2", "--samples", "2", "--d_model", "32",
                           "--layers", "1", "--new_tokens", "24", "--batch", "4",
                           "--repeats", "1"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report  # one JSON line
  for key in ("config", "machine", "generation_s", "generation_tokens", "prm_score_s",
              "align_jax_scoring_s", "transformers_scoring_s", "transformers_over_align_jax",
              "generation_share", "scoring_share", "max_abs_step_logit_diff",
              "max_abs_token_score_diff"):
    assert key in report, key
  for side in ("align_jax", "transformers", "prm_score"):
    assert set(report[side]) >= {"solutions_per_s", "tokens_per_s"}
  assert report["config"]["problems"] == 2 and report["config"]["d_model"] == 32
  assert report["solutions"] == report["scored_solutions"] == 2 * 2
  assert 0 < report["generation_tokens"] <= 2 * 2 * 24
  assert 1 <= report["step_logits"] < report["scored_tokens"]
  assert report["scored_tokens"] > report["generation_tokens"]  # prompts are scored too
  assert report["generation_share"] + report["scoring_share"] == pytest.approx(1.0)
  assert report["transformers_over_align_jax"] == pytest.approx(
      report["transformers_scoring_s"] / report["align_jax_scoring_s"])
  assert report["max_abs_step_logit_diff"] < 1e-3
  assert report["max_abs_token_score_diff"] < 1e-3
  assert report["max_abs_diff_vs_prm_score"] < 1e-5  # the timed path is ProcessRewardModel's
