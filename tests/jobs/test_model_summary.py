"""The model-summary job: the layout of a large model without building it, and a clear stop
before building a model that does not fit."""

import json
import sys

import pytest

from align_jax import main as entry
from align_jax.jobs import model_summary as summary_job

LLAMA3_8B = ["--gin_file=gin/models/llama3_8b.gin", "--gin_file=gin/mesh/v4-8.gin",
             "--gin_file=gin/runs/model_summary.gin"]


def test_layout_only_lists_an_8b_model_without_allocating_it(tmp_path, capsys):
  workdir = tmp_path / "summary"
  entry.main(LLAMA3_8B + [f"--gin.WORKDIR='{workdir}'", "--gin.model_summary.run_model=False"])
  written = json.loads((workdir / "model_summary.json").read_text())
  # Meta-Llama-3-8B has 8,030,261,248 parameters (transformers' num_parameters()).
  assert written["num_params"] == written["config_num_params"] == 8_030_261_248
  assert written["ran_model"] is False
  shapes = {r["name"]: r["shape"] for r in written["parameters"]}
  assert shapes["lm_head"] == [4096, 128256] and shapes["layers/mlp/up_kernel"] == [32, 4096, 14336]
  assert "nothing was allocated or run" in capsys.readouterr().out


def test_a_model_too_large_for_the_devices_stops_with_a_hint(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(summary_job, "_device_memory_bytes", lambda mesh: 8 * 2**30)
  monkeypatch.setattr(sys, "argv", ["align_jax", *LLAMA3_8B,
                                    f"--gin.WORKDIR='{tmp_path / 'summary'}'"])
  with pytest.raises(SystemExit) as exit_info:
    entry.main()
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "8.0B parameters need 15.0 GiB" in err and "8.0 GiB" in err
  assert "--gin.model_summary.run_model=False" in err and "Traceback" not in err
