"""Pipeline stages: completion records, skipping, reruns of interrupted stages, settings."""

import json

import pytest

from align_jax.pipeline import COMPLETION_FILE, Pipeline, Stage, stage_seconds
from align_jax.pipeline.reports import markdown_table, plot_curves, write_report


def test_completed_stages_are_skipped_and_feed_later_ones(tmp_path):
  calls = []

  def make(stage_dir, results):
    calls.append("make")
    (tmp_path / "made.txt").write_text("data")
    return {"rows": 3}

  def use(stage_dir, results):
    calls.append("use")
    if len(calls) == 2:
      raise RuntimeError("interrupted")
    return {"seen": results["make"]["rows"] * 2}

  pipeline = Pipeline(str(tmp_path), [Stage("make", make, {"n": 3}), Stage("use", use)])
  with pytest.raises(RuntimeError, match="interrupted"):
    pipeline.run()
  assert (tmp_path / "make" / COMPLETION_FILE).exists()
  assert not (tmp_path / "use" / COMPLETION_FILE).exists()
  results = pipeline.run()          # reruns only the interrupted stage
  assert calls == ["make", "use", "use"]
  assert results == {"make": {"rows": 3}, "use": {"seen": 6}}
  assert pipeline.run() == results  # everything completed: nothing runs
  assert calls == ["make", "use", "use"]
  record = json.loads((tmp_path / "use" / COMPLETION_FILE).read_text())
  assert record["result"] == {"seen": 6}
  assert record["settings"] == {"upstream": {"make": {"rows": 3}}}
  assert stage_seconds(str(tmp_path), ["make", "use", "missing"]) == {
      "make": json.loads((tmp_path / "make" / COMPLETION_FILE).read_text())["seconds"],
      "use": record["seconds"]}


def test_changed_settings_of_a_completed_stage_stop_the_run(tmp_path):
  Pipeline(str(tmp_path), [Stage("make", lambda d, r: 1, {"n": 3})]).run()
  with pytest.raises(ValueError, match=r"stage 'make' .* was completed with other settings"):
    Pipeline(str(tmp_path), [Stage("make", lambda d, r: 1, {"n": 4})]).run()


def test_report_with_plot(tmp_path):
  import matplotlib
  import matplotlib.pyplot as plt
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)))
  # A report's plot leaves the caller's matplotlib backend (a notebook's) and figures alone.
  backend, figures = matplotlib.get_backend(), plt.get_fignums()
  matplotlib.use("svg")
  try:
    png = plot_curves(str(tmp_path / "loss.png"), [(str(metrics), "loss", "train")], "Loss")
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
  finally:
    matplotlib.use(backend)
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  table = markdown_table([{"split": "train", "em": 0.5}], ["split", "em"])
  assert table.splitlines()[2] == "| train | 0.500 |"
  report = write_report(str(tmp_path / "report.md"), "Run", [("Loss", "![loss](loss.png)")])
  assert "## Loss" in open(report).read()


def test_a_stage_is_not_reused_when_what_came_before_it_changed(tmp_path):
  Pipeline(str(tmp_path), [Stage("make", lambda d, r: {"rows": 3}),
                           Stage("use", lambda d, r: r["make"]["rows"])]).run()
  import shutil
  shutil.rmtree(tmp_path / "make")  # redo the first stage, which now makes something else
  with pytest.raises(ValueError, match=r"stage 'use' .* other upstream results"):
    Pipeline(str(tmp_path), [Stage("make", lambda d, r: {"rows": 4}),
                             Stage("use", lambda d, r: r["make"]["rows"])]).run()
