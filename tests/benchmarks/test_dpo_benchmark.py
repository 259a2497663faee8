"""The DPO benchmark at a small size: one JSON line, the chunked head's loss and gradients
equal to those of the logits held whole, and less compiled temporary memory."""

import json

import pytest

from align_jax.benchmarks import dpo


def test_dpo_benchmark_reports_equal_results_and_less_memory(capsys):
  # 2 pairs x 512 tokens = 1,024 rows per side, two chunks of 512 at a 32,768 vocabulary.
  report = dpo.main(["--vocab", "32768", "--d_model", "16", "--layers", "1", "--batch", "2",
                     "--seq", "512", "--repeats", "1"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
  assert report["one_side_logits_bytes"] == 4 * 2 * 512 * 32768
  assert report["loss_abs_diff"] < 1e-4 and report["grad_max_abs_diff"] < 1e-5
  assert report["align_jax_chunked"]["loss"] == pytest.approx(
      report["materialised_logits"]["loss"], rel=1e-5)
  # The peer holds at least one side's logits whole; the chunked head never does.
  assert report["materialised_logits"]["temp_bytes"] > report["one_side_logits_bytes"]
  assert report["temp_memory_ratio"] < 0.8
  assert report["time_ratio"] > 0
