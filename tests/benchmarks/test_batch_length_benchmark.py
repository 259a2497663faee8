"""The batch-length benchmark at a small size: one JSON line, the cut batches' losses equal
to the padded ones', fewer positions computed and the same real tokens."""

import json

from align_jax.benchmarks import batch_length


def test_batch_length_benchmark_reports_equal_losses_on_fewer_positions(capsys):
  report = batch_length.main(["--vocab", "300", "--d_model", "32", "--layers", "1",
                              "--seq", "128", "--median", "24", "--pairs", "4",
                              "--batches", "4", "--multiple", "16"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
  padded, cut = report["padded_to_seq_len"], report["align_jax_cut"]
  assert padded["lengths"] == [128] and min(cut["lengths"]) < 128
  assert all(n % 16 == 0 for n in cut["lengths"])
  assert padded["positions"] == 4 * 4 * 2 * 128
  assert report["real_tokens"] <= cut["positions"] < padded["positions"]
  assert report["positions_ratio"] == cut["positions"] / padded["positions"]
  assert report["loss_max_abs_diff"] < 1e-5
  assert report["compiled_time_ratio"] > 0 and report["first_pass_time_ratio"] > 0
