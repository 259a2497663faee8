"""Resumable generation to jsonl: order, resuming after SIGKILL, refusing other settings."""

import fcntl
import json
import time
from pathlib import Path

import jax
import pytest

from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.pipeline.generation import (generate_to_jsonl, generation_stage, progress_path,
                                           prompt_renderer)
from align_jax.pipeline.stages import Pipeline, Stage
from align_jax.sampling import Sampler, SamplingConfig
from tests.process_fixtures import kill_after, start

SAMPLING = SamplingConfig(max_new_tokens=6, temperature=1.0, num_samples=2)
NUM_RECORDS = 24
CHUNK_SIZE = 2


def make_sampler() -> Sampler:
  config = TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4,
                             num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=64)
  model = Transformer(config)
  return Sampler(model, init_params(model, jax.random.key(0)), batch_size=8)


def make_records(n: int) -> list[dict]:
  return [{"id": i, "prompt_tokens": [1 + (7 * i + j) % 90 for j in range(2 + i % 5)]}
          for i in range(n)]


make_prompt = prompt_renderer()


def run(path: str, sampler: Sampler | None = None, *, n: int = NUM_RECORDS, seed: int = 0,
        delay: float = 0.0, **kwargs) -> dict:
  """The generation the tests interrupt and repeat (also run in a subprocess)."""

  def slow_prompt(record):
    time.sleep(delay)
    return make_prompt(record)

  return generate_to_jsonl(path, make_records(n), slow_prompt if delay else make_prompt,
                           sampler or make_sampler(), kwargs.pop("sampling", SAMPLING),
                           seed=seed, chunk_size=kwargs.pop("chunk_size", CHUNK_SIZE), **kwargs)


def read_rows(path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines()]


def snapshot(path) -> tuple:
  """Bytes and modification times of the output and its sidecar."""
  files = [Path(path), Path(progress_path(str(path)))]
  return tuple((f.read_bytes(), f.stat().st_mtime_ns) for f in files)


@pytest.fixture(scope="module")
def sampler() -> Sampler:
  return make_sampler()


@pytest.fixture(scope="module")
def reference(sampler, tmp_path_factory) -> Path:
  """An uninterrupted run with the default settings."""
  path = tmp_path_factory.mktemp("reference") / "out.jsonl"
  run(str(path), sampler)
  return path


def test_uninterrupted_run_writes_each_record_once_in_order(reference):
  rows = read_rows(reference)
  assert [r["id"] for r in rows] == list(range(NUM_RECORDS))
  assert [r["prompt_tokens"] for r in rows] == [r["prompt_tokens"]
                                                for r in make_records(NUM_RECORDS)]
  for row in rows:
    assert len(row["completions"]) == SAMPLING.num_samples
    for c in row["completions"]:
      assert set(c) == {"text", "tokens", "logprobs", "model_logprobs", "finished"}
      assert c["text"] is None  # token-id prompts, no vocabulary
      assert 1 <= len(c["tokens"]) <= SAMPLING.max_new_tokens
      assert len(c["logprobs"]) == len(c["model_logprobs"]) == len(c["tokens"])
  samples = [tuple(c["tokens"]) for r in rows for c in r["completions"]]
  assert len(set(samples)) > len(samples) // 2  # temperature 1: rows differ
  state = json.loads(Path(progress_path(str(reference))).read_text())
  assert state["complete"] and state["records_done"] == NUM_RECORDS
  assert state["bytes"] == reference.stat().st_size


def test_records_stream_and_postprocess_shapes_or_drops_rows(sampler, tmp_path):
  pulled = []

  def records():
    for record in make_records(10):
      pulled.append(record["id"])
      yield record

  def postprocess(record, completions):
    # Memory holds one chunk: no record is read before its chunk.
    assert len(pulled) <= (record["id"] // 4 + 1) * 4
    if record["id"] % 3 == 0:
      return None
    return {"id": record["id"], "first": completions[0]["tokens"]}

  path = tmp_path / "out.jsonl"
  stats = generate_to_jsonl(str(path), records(), make_prompt, sampler, SAMPLING, seed=0,
                            chunk_size=4, postprocess=postprocess)
  rows = read_rows(path)
  assert [r["id"] for r in rows] == [1, 2, 4, 5, 7, 8]
  assert stats["records"] == 10 and stats["rows"] == 6 and stats["dropped"] == 4
  assert stats["chunks"] == 3 and stats["generated_tokens"] > 0


def test_each_chunk_draws_its_own_randomness(sampler, tmp_path):
  path = tmp_path / "out.jsonl"
  same = [{"id": i, "prompt_tokens": [3, 4, 5]} for i in range(4)]
  generate_to_jsonl(str(path), same, make_prompt, sampler, SAMPLING, seed=0, chunk_size=1)
  firsts = [tuple(r["completions"][0]["tokens"]) for r in read_rows(path)]
  assert len(set(firsts)) > 1  # not the same key for every chunk


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_generation
test_generation.run({path!r}, delay=0.15)
"""


def test_killed_run_resumes_to_exactly_the_uninterrupted_output(sampler, reference, tmp_path):
  path = tmp_path / "out.jsonl"
  sidecar = Path(progress_path(str(path)))
  code = _CHILD.format(tests=str(Path(__file__).parent), path=str(path))
  state = kill_after(start(["-c", code], tmp_path / "child.log"), sidecar, CHUNK_SIZE,
                     timeout=120)
  assert not state["complete"] and CHUNK_SIZE <= state["records_done"] < NUM_RECORDS
  done = path.read_bytes()[:state["bytes"]]
  with open(path, "ab") as f:  # a chunk whose write was cut short
    f.write(b'{"id": 99, "prompt_tokens": [1, 2], "completions": [{"te')

  stats = run(str(path), sampler)
  assert stats["records"] == NUM_RECORDS and stats["rows"] == NUM_RECORDS
  final = path.read_bytes()
  assert final.startswith(done)  # rows written before the kill were kept as they were
  assert b'"id": 99' not in final
  assert read_rows(path) == read_rows(reference)
  assert final == reference.read_bytes()


def test_resume_refuses_other_settings_or_inputs_and_changes_nothing(sampler, reference,
                                                                     tmp_path):
  path = tmp_path / "out.jsonl"

  def interrupted():
    yield from make_records(NUM_RECORDS)[:5]
    raise RuntimeError("preempted")

  with pytest.raises(RuntimeError, match="preempted"):
    generate_to_jsonl(str(path), interrupted(), make_prompt, sampler, SAMPLING, seed=0,
                      chunk_size=CHUNK_SIZE)
  before = snapshot(path)
  assert json.loads(Path(progress_path(str(path))).read_text())["records_done"] == 4

  for change, key in [({"seed": 1}, "seed"),
                      ({"sampling": SAMPLING.replace(temperature=0.5)}, "sampling.temperature"),
                      ({"chunk_size": 3}, "chunk_size"),
                      ({"settings": {"checkpoint": "other"}}, "settings.checkpoint")]:
    with pytest.raises(ValueError, match=key) as error:
      run(str(path), sampler, **change)
    assert str(path) in str(error.value)
    assert snapshot(path) == before
  other = make_records(NUM_RECORDS)
  other[1]["prompt_tokens"] = [5, 6, 7]
  with pytest.raises(ValueError, match="other input records") as error:
    generate_to_jsonl(str(path), other, make_prompt, sampler, SAMPLING, seed=0,
                      chunk_size=CHUNK_SIZE)
  assert str(path) in str(error.value)
  assert snapshot(path) == before

  with open(path, "rb") as holder:  # another run holds the file
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    with pytest.raises(RuntimeError, match="another run"):
      run(str(path), sampler)
  assert snapshot(path) == before

  run(str(path), sampler)  # the same settings resume
  assert path.read_bytes() == reference.read_bytes()


def test_complete_output_is_not_touched_by_a_rerun(sampler, tmp_path):
  path = tmp_path / "out.jsonl"
  stats = run(str(path), sampler, n=6, chunk_size=4)
  assert [r["id"] for r in read_rows(path)] == list(range(6))
  before = snapshot(path)

  class Unused:
    def generate(self, *args, **kwargs):
      raise AssertionError("a complete output was generated again")

  time.sleep(0.01)
  assert run(str(path), Unused(), n=6, chunk_size=4) == stats
  assert snapshot(path) == before
  for change, key in [({"seed": 1}, "seed"), ({"n": 7}, "records")]:
    with pytest.raises(ValueError, match=key) as error:
      run(str(path), Unused(), chunk_size=4, **{"n": 6, **change})
    assert str(path) in str(error.value)
    assert snapshot(path) == before


def test_a_file_not_made_here_is_never_overwritten(sampler, tmp_path):
  path = tmp_path / "out.jsonl"
  path.write_text('{"mine": 1}\n')
  with pytest.raises(FileExistsError, match="out.jsonl"):
    run(str(path), sampler)
  assert path.read_text() == '{"mine": 1}\n'
  assert not Path(progress_path(str(path))).exists()


def test_generation_stage_in_a_pipeline(sampler, tmp_path):
  fn = generation_stage(lambda results: make_records(results["count"]), make_prompt,
                        lambda results: sampler, SAMPLING, seed=0, chunk_size=2)
  stages = [Stage("count", lambda d, r: 3), Stage("sample", fn, {"seed": 0})]
  results = Pipeline(str(tmp_path), stages).run()
  path = results["sample"]["path"]
  assert path == str(tmp_path / "sample" / "generations.jsonl")
  assert results["sample"]["rows"] == 3 and len(read_rows(path)) == 3
  assert Pipeline(str(tmp_path), stages).run() == results  # completed: skipped
