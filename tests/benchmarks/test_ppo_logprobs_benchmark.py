"""PPO's log-probability benchmark at a small size: one JSON line, the chunked head's
outputs and gradients equal to those of the logits held whole, and less compiled
temporary memory."""

import json

from align_jax.benchmarks import ppo_logprobs


def test_ppo_logprobs_benchmark_reports_equal_results_and_less_memory(capsys):
  # 2 responses x 512 positions at a 32,768 vocabulary, four chunks of 2 x 128.
  report = ppo_logprobs.main(["--vocab", "32768", "--d_model", "16", "--layers", "1",
                              "--batch", "2", "--prompt", "16", "--response", "512",
                              "--chunk", "256", "--repeats", "1"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
  assert report["logits_bytes"] == 4 * 2 * 512 * 32768
  assert report["output_max_abs_diff"] < 1e-4 and report["grad_max_abs_diff"] < 1e-5
  # The peer holds the logits whole; the chunked head never does.
  assert report["materialised_logits"]["temp_bytes"] > report["logits_bytes"]
  assert report["temp_memory_ratio"] < 0.5
  assert report["time_ratio"] > 0
