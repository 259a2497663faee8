"""Paths keep their scheme: a URL WORKDIR (gs://, file://, ram://) is never made a local
folder, and every writer reads and writes through `align_jax.fs`.

ram:// is TensorFlow's in-memory file system (process-wide, offline); each test writes
under a folder of its own there.
"""

import json
import os
import uuid

import pytest

from align_jax import fs
from align_jax import main as entry
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.jobs import run as run_module
from align_jax.pipeline import Pipeline, Stage
from align_jax.pipeline.generation import generate_to_jsonl, progress_path, prompt_renderer
from align_jax.pipeline.reports import plot_curves, write_report
from align_jax.training import checkpoints as checkpoints_module
from align_jax.training import MetricsWriter, read_metrics
from align_jax.training.checkpoints import Checkpointer, checkpoint_location
from hf_fixtures import write_words_data
from training_fixtures import TINY_MODEL_FLAGS

SMALL = ["--gin.DataConfig.batch_size=4", "--gin.DataConfig.seq_len=32",
         "--gin.OptimizerConfig.warmup_steps=2", "--gin.LoopConfig.progress_bar=False",
         "--gin.LoopConfig.checkpoint_every=2"]


@pytest.fixture
def ram():
  """A fresh folder of TensorFlow's in-memory file system, removed afterwards."""
  root = f"ram://test-{uuid.uuid4().hex[:12]}"
  yield root
  if fs.exists(root):
    fs.rmtree(root)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
  """An empty current directory: a URL mistaken for a local path would appear in it."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  return cwd


# ------------------------------------------------------------------------------------
# The fs layer.

def test_resolve_keeps_urls_exactly_and_makes_local_paths_absolute(elsewhere, monkeypatch):
  for url in ("gs://b/x", "ram://x", "gs://bucket/run/", "s3://b/k", "file:///abs/run"):
    assert fs.resolve(url) == url and fs.has_scheme(url)
  assert fs.resolve("runs/x") == os.path.join(str(elsewhere), "runs", "x")
  monkeypatch.setenv("HOME", "/home/someone")
  assert fs.resolve("~/runs/x") == "/home/someone/runs/x"
  assert not fs.has_scheme("runs/gs://x") and not fs.has_scheme("/abs/x")
  assert fs.local_path("file:///abs/run") == "/abs/run" and fs.local_path("gs://b/x") is None
  assert fs.join("gs://b/run", "checkpoints", "2") == "gs://b/run/checkpoints/2"
  assert fs.join("ram://", "x.jsonl") == "ram://x.jsonl"
  assert fs.dirname("gs://b/run/x.jsonl") == "gs://b/run" and fs.dirname("gs://b") == "gs://"
  assert fs.basename("gs://b/run/stage/") == "stage"
  with pytest.raises(ValueError, match="absolute path"):
    fs.local_path("file://relative/run")
  assert os.listdir(elsewhere) == []


def test_write_read_list_and_replace_through_ram(ram, elsewhere):
  folder = fs.join(ram, "a", "b")
  fs.makedirs(folder)
  assert fs.isdir(folder) and not fs.isfile(folder)
  with fs.open(fs.join(folder, "x.txt"), "w") as f:
    f.write("héllo\n")
  with fs.open(fs.join(folder, "x.txt"), "a") as f:
    f.write("more\n")
  assert fs.read_text(fs.join(folder, "x.txt")) == "héllo\nmore\n"
  assert fs.getsize(fs.join(folder, "x.txt")) == len("héllo\nmore\n".encode())
  fs.write_atomically(fs.join(folder, "y.bin"), b"\x00\x01")
  fs.write_atomically(fs.join(folder, "y.bin"), b"\x02")  # replaces the earlier file
  assert fs.read_bytes(fs.join(folder, "y.bin")) == b"\x02"
  assert fs.listdir(folder) == ["x.txt", "y.bin"]  # no temporary file is left
  assert fs.glob(fs.join(folder, "*.txt")) == [fs.join(folder, "x.txt")]
  fs.replace(fs.join(folder, "x.txt"), fs.join(folder, "z.txt"))
  fs.copy(fs.join(folder, "z.txt"), fs.join(ram, "copy.txt"))
  assert fs.listdir(folder) == ["y.bin", "z.txt"]
  assert fs.read_text(fs.join(ram, "copy.txt")) == "héllo\nmore\n"
  fs.remove(fs.join(folder, "z.txt"))
  assert not fs.exists(fs.join(folder, "z.txt"))
  with pytest.raises(FileNotFoundError, match="z.txt"):
    fs.open(fs.join(folder, "z.txt"))
  fs.rmtree(fs.join(ram, "a"))
  assert not fs.exists(fs.join(folder, "y.bin"))
  with pytest.raises(ValueError, match=r"nosuch://x: no file system serves nosuch://"):
    fs.exists("nosuch://x")
  assert os.listdir(elsewhere) == []


def test_file_urls_are_local_files(tmp_path):
  url = "file://" + str(tmp_path / "run")
  fs.makedirs(url)
  fs.write_atomically(fs.join(url, "x.json"), "{}")
  assert (tmp_path / "run" / "x.json").read_text() == "{}"
  assert fs.listdir(url) == ["x.json"] and fs.glob(fs.join(url, "*.json")) == [
      fs.join(url, "x.json")]


# ------------------------------------------------------------------------------------
# Writers that do not need orbax, through ram://.

def test_metrics_and_tensorboard_through_ram(ram, elsewhere):
  import tensorflow as tf
  writer = MetricsWriter(ram, resumed_from=0)
  writer.write(1, {"loss": 2.0})
  writer.write(2, {"loss": 1.5})
  writer.event(2, event="resumed")
  writer.close()
  records = read_metrics(fs.join(ram, "metrics.jsonl"))
  assert records == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
  events = fs.glob(fs.join(ram, "tensorboard", "events.out.tfevents.*"))
  assert len(events) == 1
  scalars = [(e.step, v.tag) for e in tf.compat.v1.train.summary_iterator(events[0])
             for v in e.summary.value]
  assert scalars == [(1, "loss"), (2, "loss")]
  MetricsWriter(ram, resumed_from=1, tensorboard=False)  # a resume drops what followed step 1
  assert [r["step"] for r in read_metrics(fs.join(ram, "metrics.jsonl"))] == [1]
  assert os.listdir(elsewhere) == []


def test_jsonl_report_and_plot_through_ram(ram, elsewhere):
  records = [{"text": "ü", "n": i} for i in range(3)]
  path = fs.join(ram, "data", "x.jsonl")
  assert write_jsonl(path, records) == 3
  assert list(read_jsonl(path)) == records
  with pytest.raises(FileExistsError):
    write_jsonl(path, records)
  MetricsWriter(fs.join(ram, "run"), tensorboard=False).write(1, {"loss": 1.0})
  png = plot_curves(fs.join(ram, "report", "loss.png"),
                    [(fs.join(ram, "run", "metrics.jsonl"), "loss", "run")], "Loss", "loss")
  assert fs.read_bytes(png).startswith(b"\x89PNG")
  report = write_report(fs.join(ram, "report.md"), "Title", [("Loss", "![loss](report/loss.png)")])
  assert fs.read_text(report) == "# Title\n\n## Loss\n\n![loss](report/loss.png)\n"
  assert os.listdir(elsewhere) == []


def test_pipeline_records_completion_through_ram(ram, elsewhere):
  calls = []

  def make(stage_dir, results):
    calls.append(stage_dir)
    write_jsonl(fs.join(stage_dir, "out.jsonl"), [{"a": 1}])
    return {"path": fs.join(stage_dir, "out.jsonl")}

  stages = [Stage("make", make, {"n": 1})]
  assert Pipeline(ram, stages).run() == {"make": {"path": f"{ram}/make/out.jsonl"}}
  assert json.loads(fs.read_text(fs.join(ram, "make", "COMPLETED.json")))["result"] == {
      "path": f"{ram}/make/out.jsonl"}
  Pipeline(ram, stages).run()  # completed: skipped
  assert calls == [f"{ram}/make"]
  assert os.listdir(elsewhere) == []


class _EchoSampler:
  """A sampler stand-in: each sample's text is its prompt's length (and its index)."""

  def generate(self, prompts, sampling, key, progress=None):
    del key, progress
    from types import SimpleNamespace
    n = sampling.num_samples
    rows = [p for p in prompts for _ in range(n)]
    return SimpleNamespace(
        texts=[f"{len(p)}:{i % n}" for i, p in enumerate(rows)],
        tokens=[[len(p)] for p in rows], logprobs=[[0.0] for _ in rows],
        model_logprobs=[[0.0] for _ in rows], finished=[True for _ in rows],
        num_samples=n, num_generated_tokens=len(rows))


def test_generation_output_and_sidecar_through_ram(ram, elsewhere, monkeypatch):
  from align_jax.pipeline import generation
  from align_jax.sampling import SamplingConfig
  monkeypatch.setattr(generation, "completion_records", lambda result, i: [
      {"text": t} for t in result.texts[i * result.num_samples:(i + 1) * result.num_samples]])
  records = [{"id": i, "prompt_tokens": list(range(1, 2 + i))} for i in range(5)]
  sampling = SamplingConfig(max_new_tokens=2, num_samples=2)
  path = fs.join(ram, "gen", "out.jsonl")

  def generate(n):
    return generate_to_jsonl(path, records[:n], prompt_renderer(), _EchoSampler(), sampling,
                             seed=0, chunk_size=2)

  generate(5)
  rows = [json.loads(line) for line in fs.read_text(path).splitlines()]
  assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
  assert rows[3]["completions"] == [{"text": "4:0"}, {"text": "4:1"}]
  state = json.loads(fs.read_text(progress_path(path)))
  assert state["complete"] and state["bytes"] == fs.getsize(path)
  # An interrupted run on a URL: the bytes past the last complete chunk are cut off.
  fs.remove(path)
  fs.remove(progress_path(path))
  with pytest.raises(ZeroDivisionError):
    generate_to_jsonl(path, records, prompt_renderer(), _EchoSampler(), sampling, seed=0,
                      chunk_size=2, postprocess=lambda r, c: {"id": 1 // (r["id"] < 2)})
  done = json.loads(fs.read_text(progress_path(path)))
  assert done["records_done"] == 2 and fs.getsize(path) == done["bytes"]
  with fs.open(path, "a") as f:
    f.write('{"half a chunk')
  stats = generate_to_jsonl(path, records, prompt_renderer(), _EchoSampler(), sampling, seed=0,
                            chunk_size=2, postprocess=lambda r, c: {"id": 1 // (r["id"] < 9)})
  assert stats["records"] == 5
  assert [json.loads(line) for line in fs.read_text(path).splitlines()] == [
      {"id": 1}] * 5
  assert os.listdir(elsewhere) == []


# ------------------------------------------------------------------------------------
# Checkpoints and WORKDIR: what orbax can write, and a gs:// WORKDIR kept as given.

def test_checkpoint_location_keeps_gs_and_refuses_ram(elsewhere):
  assert checkpoint_location("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
  assert checkpoint_location("s3://bucket/run") == "s3://bucket/run"
  assert checkpoint_location("file:///abs/run/checkpoints") == "/abs/run/checkpoints"
  assert checkpoint_location("runs/x") == os.path.join(str(elsewhere), "runs", "x")
  with pytest.raises(ValueError, match=r"WORKDIR ram://run: checkpoints cannot be written "
                                       r"under ram://.*file://.*gs://, s3://"):
    checkpoint_location("ram://run", "WORKDIR")
  with pytest.raises(ValueError, match="ram://run/checkpoints"):
    Checkpointer("ram://run/checkpoints")
  assert os.listdir(elsewhere) == []


def test_checkpointer_hands_gs_urls_to_orbax_unchanged(elsewhere, monkeypatch):
  given = []

  class Manager:
    def __init__(self, directory, **kwargs):
      given.append(str(directory))

  monkeypatch.setattr(checkpoints_module.ocp, "CheckpointManager", Manager)
  checkpointer = Checkpointer(fs.join("gs://bucket/run", "checkpoints"))
  assert given == ["gs://bucket/run/checkpoints"]
  assert checkpointer.directory == "gs://bucket/run/checkpoints"
  assert os.listdir(elsewhere) == []


def test_run_keeps_a_gs_workdir_and_never_makes_it_local(elsewhere, monkeypatch):
  made = []

  def makedirs(path):
    made.append(path)
    raise PermissionError(f"{path}: no network in tests")

  monkeypatch.setattr(fs, "makedirs", makedirs)
  with pytest.raises(PermissionError, match="gs://bucket/run"):
    run_module.run(job=lambda workdir: None, workdir="gs://bucket/run")
  assert made == ["gs://bucket/run"]
  assert os.listdir(elsewhere) == []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("paths_data")
  write_words_data(root, 120)
  return root


def _pretrain(workdir, data, steps=2, *extra):
  return entry.main(TINY_MODEL_FLAGS + SMALL + [
      "--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{workdir}'",
      f"--gin.TRAIN_DATA='file://{data / 'text.jsonl'}'",
      f"--gin.VOCABULARY='file://{data / 'spm.model'}'", f"--gin.STEPS={steps}", *extra])


def test_a_ram_workdir_stops_before_anything_is_written(data, elsewhere):
  workdir = f"ram://run-{uuid.uuid4().hex[:12]}"
  with pytest.raises(ValueError, match=rf"WORKDIR {workdir}: checkpoints cannot be written "
                                       r"under ram://"):
    _pretrain(workdir, data)
  assert not fs.exists(workdir)
  assert os.listdir(elsewhere) == []


def test_a_file_url_workdir_writes_the_run_in_its_folder(data, tmp_path, elsewhere):
  folder = tmp_path / "run"
  url = "file://" + str(folder)
  summary = _pretrain(url, data, 2)
  assert summary["steps"] == 2 and summary["checkpoints"] == f"{url}/checkpoints"
  for name in ("config.gin", "operative_config.gin", "run_record.json", "metrics.jsonl",
               "train_summary.json"):
    assert (folder / name).is_file(), name
  assert [p.name for p in (folder / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
  assert list((folder / "tensorboard").iterdir())
  assert [r["step"] for r in read_metrics(str(folder / "metrics.jsonl"))] == [1, 2]
  record = json.loads((folder / "run_record.json").read_text())
  assert f"file://{data / 'text.jsonl'}" in record["files"]  # the data is fingerprinted
  # The record is read back through the URL: a changed rerun stops before training.
  with pytest.raises(ValueError, match="OptimizerConfig.learning_rate"):
    _pretrain(url, data, 4, "--gin.OptimizerConfig.learning_rate=0.5")
  assert os.listdir(elsewhere) == []
