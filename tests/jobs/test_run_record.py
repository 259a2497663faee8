"""The record of a run: a rerun with another config or data stops, unless allowed."""

import json
import shutil

import pytest

from align_jax import main as entry
from align_jax.jobs import run as run_module
from align_jax.jobs.run import check_run_record, is_ignored, parse_config, run_fingerprint
from align_jax.training import Checkpointer
from training_fixtures import TINY_MODEL_FLAGS
from hf_fixtures import write_words_data

MODEL = TINY_MODEL_FLAGS
SMALL = ["--gin.DataConfig.batch_size=4", "--gin.DataConfig.seq_len=32",
         "--gin.OptimizerConfig.warmup_steps=2", "--gin.LoopConfig.progress_bar=False",
         "--gin.LoopConfig.checkpoint_every=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("record_data")
  write_words_data(root, 200)
  return root


def _pretrain(workdir, train_data, vocabulary, steps, *extra):
  return entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{workdir}'",
      f"--gin.TRAIN_DATA='{train_data}'", f"--gin.VOCABULARY='{vocabulary}'",
      f"--gin.STEPS={steps}", *extra])


def _steps(workdir):
  checkpointer = Checkpointer(str(workdir / "checkpoints"))
  try:
    return checkpointer.all_steps()
  finally:
    checkpointer.close()


def test_config_text_is_parsed_into_bindings_and_run_settings_are_ignored():
  text = ("# Macros:\nSTEPS = 40\nTRAIN_DATA = 'a.jsonl'\n\n# Parameters for DataConfig:\n"
          "DataConfig.train_files = %TRAIN_DATA\nfoo/Bar.items = [\n    1,\n    2,\n]\n")
  assert parse_config(text) == {"STEPS": "40", "TRAIN_DATA": "'a.jsonl'",
                                "DataConfig.train_files": "%TRAIN_DATA",
                                "foo/Bar.items": "[ 1, 2, ]"}
  assert all(is_ignored(k) for k in ("STEPS", "LoopConfig.total_steps", "create_mesh.shape",
                                     "policy/LoopConfig.progress_bar",
                                     "train_lm.num_micro_batches"))
  assert not any(is_ignored(k) for k in ("OptimizerConfig.learning_rate",
                                         "OptimizerConfig.total_steps", "TRAIN_DATA"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
  """A finished 4-step run (checkpoints at 2 and 4) with learning rate 1e-3."""
  work = tmp_path_factory.mktemp("finished") / "run"
  _pretrain(work, data / "text.jsonl", data / "spm.model", 4,
            "--gin.OptimizerConfig.learning_rate=1e-3")
  return work


def _copy(finished, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(finished, work)
  return work


def test_rerun_with_another_learning_rate_stops_unless_allowed(data, finished, tmp_path):
  work = _copy(finished, tmp_path)
  first_config = (work / "config.gin").read_bytes()
  args = (work, data / "text.jsonl", data / "spm.model", 6,
          "--gin.OptimizerConfig.learning_rate=3e-3")
  with pytest.raises(ValueError, match=r"OptimizerConfig.learning_rate: 0.001 in the run, "
                                       r"0.003 now\n.*allow_config_change=True"):
    _pretrain(*args)
  assert (work / "config.gin").read_bytes() == first_config
  assert _steps(work) == [2, 4]
  assert not (work / "config.1.gin").exists() and not (work / "config_changes.jsonl").exists()

  _pretrain(*args, "--gin.run.allow_config_change=True")
  assert _steps(work) == [2, 4, 6]
  changes = [json.loads(l) for l in (work / "config_changes.jsonl").read_text().splitlines()]
  assert [c["changes"] for c in changes] == [
      [{"key": "OptimizerConfig.learning_rate", "run": "0.001", "now": "0.003"}]]
  assert (work / "config.1.gin").read_bytes() == first_config
  assert "OptimizerConfig.learning_rate = 0.003" in (work / "config.gin").read_text()
  record = json.loads((work / "run_record.json").read_text())
  assert record["config"]["OptimizerConfig.learning_rate"] == "0.003"


def test_more_steps_resume_and_each_step_is_logged_once(data, finished, tmp_path):
  work = _copy(finished, tmp_path)
  first_config = (work / "config.gin").read_bytes()
  # As if the run had died after logging step 4 but before its checkpoint was written.
  shutil.rmtree(work / "checkpoints" / "4")
  _pretrain(work, data / "text.jsonl", data / "spm.model", 6,
            "--gin.OptimizerConfig.learning_rate=1e-3")
  assert _steps(work) == [2, 4, 6]
  assert (work / "config.1.gin").read_bytes() == first_config
  assert "STEPS = 6" in (work / "config.gin").read_text()
  assert not (work / "config_changes.jsonl").exists()
  rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
  assert [(r["step"], r["event"]) for r in rows if "event" in r] == [(2, "resumed")]


def test_changed_training_data_is_named(tmp_path, monkeypatch):
  train = tmp_path / "train.jsonl"
  train.write_text(json.dumps({"text": "the cat sat"}) + "\n")
  text = (f"STEPS = 4\nTRAIN_DATA = \\\n    '{train}'\n"
          "DataConfig.train_files = %TRAIN_DATA\n")
  (tmp_path / "run_record.json").write_text(json.dumps(run_fingerprint(text)))
  with train.open("a") as f:
    f.write(json.dumps({"text": "one more line"}) + "\n")
  check_run_record(str(tmp_path), text)  # nothing trained yet (no checkpoint): fine
  (tmp_path / "checkpoints" / "2").mkdir(parents=True)
  train.write_text(json.dumps({"text": "the cat sat"}) + "\n")
  check_run_record(str(tmp_path), text.replace("STEPS = 4", "STEPS = 8"))  # more steps: fine
  with train.open("a") as f:
    f.write(json.dumps({"text": "one more line"}) + "\n")
  with pytest.raises(ValueError, match=rf"file {train} \(TRAIN_DATA\): 24 bytes, sha256 \w{{12}} "
                                       rf"in the run, 50 bytes, sha256 \w{{12}} now"):
    check_run_record(str(tmp_path), text)
  # Big files are fingerprinted by their size and samples, not read whole.
  monkeypatch.setattr(run_module, "FULL_HASH_LIMIT", 16)
  monkeypatch.setattr(run_module, "SAMPLE_BYTES", 4)
  assert set(run_module.file_fingerprint(str(train))) == {"size", "sampled_sha256"}
