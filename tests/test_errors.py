"""What a user sees when a run goes wrong: one `align_jax: error:` line and exit status 2,
no traceback unless asked for, configuration mistakes caught before any work, and no
GPU/TPU noise on a CPU-only host."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align_jax import main as entry
from align_jax.parallel import host

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/pretrain.gin"]


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "align_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=env or dict(os.environ, JAX_PLATFORMS="cpu"))


def _missing_vocabulary(tmp_path):
  return PRETRAIN + [f"--gin.WORKDIR='{tmp_path / 'w'}'",
                     f"--gin.TRAIN_DATA='{tmp_path / 'corpus.jsonl'}'",
                     f"--gin.VOCABULARY='{tmp_path / 'nowhere.model'}'", "--gin.STEPS=2"]


def test_missing_file_is_one_line_on_a_quiet_cpu_host(tmp_path):
  if any(importlib.util.find_spec(name) for name in host._ACCELERATOR_PLUGINS):  # noqa: SLF001
    pytest.skip("an accelerator plugin is installed: JAX is not CPU-only here")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
  out = _cli(*_missing_vocabulary(tmp_path), env=env)
  assert out.returncode == 2, out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("align_jax:")]
  assert errors == [f"align_jax: error: SentencePiece model '{tmp_path / 'nowhere.model'}' "
                    "does not exist."]
  assert "Traceback" not in out.stderr
  for noise in ("cuInit", "TPU", "tpu", "oneDNN", "cuda", "InitializeLog"):
    assert noise not in out.stderr


def test_traceback_flag_shows_the_traceback(tmp_path):
  out = _cli(*_missing_vocabulary(tmp_path), "--traceback")
  assert out.returncode == 1
  assert "Traceback (most recent call last)" in out.stderr
  assert "FileNotFoundError: SentencePiece model" in out.stderr
  assert "align_jax: error:" not in out.stderr


def test_unquoted_string_and_misspelt_macro_stop_before_work(tmp_path):
  out = _cli(*PRETRAIN, "--gin.VOCABULARY=spm.model")
  assert out.returncode == 2
  assert out.stderr == ("align_jax: error: --gin.VOCABULARY=spm.model: a string value must be "
                        "quoted, e.g. --gin.VOCABULARY=\"'spm.model'\"\n")
  out = _cli(*_missing_vocabulary(tmp_path), "--gin.STEPSS=10")
  assert out.returncode == 2
  assert out.stderr == ("align_jax: error: --gin.STEPSS: no gin file defines or uses the macro "
                        "STEPSS; did you mean STEPS?\n")
  assert not (tmp_path / "w").exists()


def test_missing_include_names_it_and_the_search_path_to_add(tmp_path):
  (tmp_path / "cfg" / "models").mkdir(parents=True)
  (tmp_path / "cfg" / "runs").mkdir()
  (tmp_path / "cfg" / "models" / "mine.gin").write_text("VOCAB_SIZE = 64\n")
  run_file = tmp_path / "cfg" / "runs" / "mine.gin"
  run_file.write_text("include 'models/mine.gin'\ninclude 'runs/model_summary.gin'\n")
  out = _cli(f"--gin_file={run_file}", f"--gin.WORKDIR='{tmp_path / 'w'}'")
  assert out.returncode == 2
  assert len(out.stderr.splitlines()) < 5, out.stderr
  assert "Traceback" not in out.stderr
  assert (f"align_jax: error: gin file 'models/mine.gin' (included by {run_file}, line 1) "
          "not found") in out.stderr
  assert f"align_jax: hint: it is in {tmp_path / 'cfg'}: add --gin_search_paths=" in out.stderr


def test_help_shows_the_override_form_and_traceback():
  out = _cli("--help")
  assert out.returncode == 0
  assert "--gin.KEY=VALUE" in out.stdout
  assert "--gin.WORKDIR=\"'runs/x'\"" in out.stdout
  assert "--traceback" in out.stdout


def test_missing_model_file_is_named_without_a_config_dump(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    entry.main(["--gin_file=gin/runs/pretrain.gin", *_missing_vocabulary(tmp_path)[2:]])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.splitlines()
  assert err[0].startswith("align_jax: error: the macro MODEL_CONFIG is read (")
  assert "runs/pretrain.gin, line" in err[0]
  assert err[1].startswith("align_jax: hint: add one of the shipped gin files that define it")
  assert "models/tiny.gin" in err[1] and len(err) == 2


def test_command_line_reports_user_errors_and_keeps_internal_ones(monkeypatch, capsys):
  def failing(error):
    def run(args):
      raise error
    return run

  monkeypatch.setattr(sys, "argv", ["align_jax", "--gin_file=gin/quickstart.gin"])
  wrapped = ValueError("data.jsonl, line 3: not valid JSON\n  In call to configurable 'run' (x)")
  wrapped.__cause__ = KeyError("text")
  monkeypatch.setattr(entry, "_run", failing(wrapped))
  with pytest.raises(SystemExit) as exit_info:
    entry.main()
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.splitlines()
  assert err[0] == "align_jax: error: data.jsonl, line 3: not valid JSON"
  # Raised outside align_jax's own code: it may be a fault, so the traceback is offered.
  assert err[1].startswith("align_jax: hint: ValueError from ") and "--traceback" in err[1]
  # Called with argv from Python, the error is raised; so it is with ALIGN_JAX_TRACEBACK.
  with pytest.raises(ValueError, match="not valid JSON"):
    entry.main(["--gin_file=gin/quickstart.gin"])
  monkeypatch.setenv("ALIGN_JAX_TRACEBACK", "1")
  with pytest.raises(ValueError, match="not valid JSON"):
    entry.main()
  monkeypatch.delenv("ALIGN_JAX_TRACEBACK")
  monkeypatch.setattr(entry, "_run", failing(TypeError("a fault of the program")))
  with pytest.raises(TypeError):
    entry.main()


def test_a_model_smaller_than_its_vocabulary_is_one_line_before_any_step(tmp_path):
  from align_jax.data.vocab import train_sentencepiece
  from hf_fixtures import words_corpus
  texts = words_corpus(100)
  train_sentencepiece(texts, str(tmp_path / "spm"), 300)
  (tmp_path / "corpus.jsonl").write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))
  out = _cli(*PRETRAIN, f"--gin.WORKDIR='{tmp_path / 'w'}'",
             f"--gin.TRAIN_DATA='{tmp_path / 'corpus.jsonl'}'",
             f"--gin.VOCABULARY='{tmp_path / 'spm.model'}'", "--gin.STEPS=2",
             "--gin.VOCAB_SIZE=256")
  assert out.returncode == 2, out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("align_jax:")]
  assert errors == [
      f"align_jax: error: the model's vocab_size 256 is smaller than the vocabulary "
      f"{tmp_path / 'spm.model'}, which has 300 pieces: ids 256..299 would index past the "
      "model's embedding table; set vocab_size to 300 (--gin.VOCAB_SIZE=300 with "
      "gin/models/tiny.gin, else --gin.TransformerConfig.vocab_size=300)"]
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()
