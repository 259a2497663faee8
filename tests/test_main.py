"""The gin entry point: layering, overrides, clear errors before work, config.gin."""

import json
import os
import subprocess
import sys

import pytest

from align_jax import main as entry

MODEL = """
MODEL_CONFIG = @TransformerConfig()
TransformerConfig.vocab_size = 64
TransformerConfig.num_layers = 1
TransformerConfig.d_model = 16
TransformerConfig.num_heads = 2
TransformerConfig.num_kv_heads = 1
TransformerConfig.head_dim = 8
TransformerConfig.mlp_dim = 32
create_mesh.shape = (1, -1, 1)
"""


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_two_files_and_flag_overrides_layer_in_order(tmp_path):
  base = _write(tmp_path / "base.gin", MODEL + "include 'runs/model_summary.gin'\n"
                "WORKDIR = 'from_base'\nmodel_summary.seq_len = 6\n")
  over = _write(tmp_path / "over.gin", "TransformerConfig.d_model = 24\n"
                "model_summary.seq_len = 8\n")
  workdir = tmp_path / "work"
  summary = entry.main([f"--gin_file={base}", f"--gin_file={over}",
                        f"--gin.WORKDIR='{workdir}'", "--gin.TransformerConfig.mlp_dim=48",
                        "--gin_bindings=model_summary.batch_size = 3"])
  assert summary["config"]["d_model"] == 24          # second file wins over the first
  assert summary["config"]["mlp_dim"] == 48          # --gin. flag wins over files
  assert summary["config"]["num_layers"] == 1        # untouched values come through
  written = json.loads((workdir / "model_summary.json").read_text())
  assert written["num_params"] == written["config_num_params"]
  assert abs(written["loss_random_tokens"] - written["log_vocab"]) < 0.5
  assert written["kv_cache_max_abs_gap"] < 1e-5
  config_gin = (workdir / "config.gin").read_text()
  assert "TransformerConfig.d_model = 24" in config_gin
  assert "TransformerConfig.mlp_dim = 48" in config_gin
  assert "model_summary.batch_size = 3" in config_gin and "model_summary.seq_len = 8" in config_gin
  assert (workdir / "operative_config.gin").exists()


def test_unset_required_macro_fails_before_work_naming_key_and_file(tmp_path, capsys):
  base = _write(tmp_path / "base.gin", MODEL + "include 'runs/model_summary.gin'\n")
  with pytest.raises(SystemExit) as exit_info:
    entry.main([f"--gin_file={base}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "WORKDIR is %gin.REQUIRED" in err
  assert "runs/model_summary.gin, line" in err
  assert not list(tmp_path.glob("**/config.gin"))


def test_misspelt_key_in_file_names_file_and_line(tmp_path, capsys):
  bad = _write(tmp_path / "bad.gin", MODEL + "TransformerConfig.d_modle = 3\n")
  with pytest.raises(SystemExit):
    entry.main([f"--gin_file={bad}"])
  err = capsys.readouterr().err
  assert "doesn't have a parameter named 'd_modle'" in err
  assert "bad.gin\", line 11" in err


def test_misspelt_configurable_in_flag_is_named(tmp_path, capsys):
  base = _write(tmp_path / "base.gin", MODEL)
  with pytest.raises(SystemExit):
    entry.main([f"--gin_file={base}", "--gin.TransformerConfg.d_model=3"])
  err = capsys.readouterr().err
  assert "No configurable matching 'TransformerConfg'" in err and "bindings string" in err


def test_missing_gin_file_lists_available(capsys):
  with pytest.raises(SystemExit):
    entry.main(["--gin_file=gin/nope.gin"])
  err = capsys.readouterr().err
  assert "gin file 'gin/nope.gin' not found" in err and "quickstart.gin" in err


def test_module_help_lists_flags_and_gin_files():
  out = subprocess.run([sys.executable, "-m", "align_jax.main", "--help"], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0
  for flag in ("--gin_file", "--gin_search_paths", "--gin_bindings"):
    assert flag in out.stdout
  assert "quickstart.gin" in out.stdout and "runs/model_summary.gin" in out.stdout
  assert "models/tiny.gin" in out.stdout
