"""The generate run: gin file -> jsonl of completions from an imported checkpoint."""

import json

import pytest

from align_jax import main as entry
from hf_fixtures import save_tiny_llama


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_model")
  save_tiny_llama(directory, max_positions=128)
  return directory


def test_generate_run_writes_completions(hf_model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("\n".join(json.dumps(r) for r in [
      {"prompt": "the cat sat on", "id": "a"},
      {"prompt_tokens": [1, 40, 41, 42], "id": "b"},
      {"prompt": "hello world", "id": "c"},
  ]) + "\n")
  workdir = tmp_path / "work"
  stats = entry.main([
      "--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{workdir}'",
      f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'",
      "--gin.SamplingConfig.num_samples=2", "--gin.SamplingConfig.max_new_tokens=12",
      "--gin.generate.batch_size=4"])
  lines = [json.loads(l) for l in (workdir / "generations.jsonl").read_text().splitlines()]
  assert [l["id"] for l in lines] == ["a", "b", "c"]
  for line in lines:
    assert len(line["completions"]) == 2
    for completion in line["completions"]:
      n = len(completion["tokens"])
      assert 1 <= n <= 12 and len(completion["logprobs"]) == n
      assert all(lp <= 1e-6 for lp in completion["model_logprobs"])
      assert isinstance(completion["text"], str)
  assert stats["generated_tokens"] == sum(len(c["tokens"]) for l in lines for c in l["completions"])
  assert (workdir / "config.gin").exists() and (workdir / "metrics.jsonl").exists()

  # Rerunning into the same WORKDIR never overwrites the completions.
  before = (workdir / "generations.jsonl").read_bytes()
  with pytest.raises(FileExistsError, match="generations.jsonl already exists"):
    entry.main(["--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{workdir}'",
                f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'"])
  assert (workdir / "generations.jsonl").read_bytes() == before


def test_malformed_prompt_line_is_named(hf_model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
  with pytest.raises(ValueError, match=r"prompts.jsonl, line 2: missing field 'prompt'"):
    entry.main(["--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{tmp_path / 'w'}'",
                f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'"])


def test_generate_from_an_align_jax_training_run(tmp_path):
  import json as _json
  from align_jax.data.vocab import train_sentencepiece
  from hf_fixtures import words_corpus
  texts = words_corpus(200)
  train_sentencepiece(texts, str(tmp_path / "spm"), 300)
  (tmp_path / "text.jsonl").write_text("".join(_json.dumps({"text": t}) + "\n" for t in texts))
  model = ["--gin_file=gin/models/tiny.gin", "--gin.VOCAB_SIZE=320",
           "--gin.TransformerConfig.num_layers=1", "--gin.TransformerConfig.d_model=32",
           "--gin.TransformerConfig.mlp_dim=64", "--gin.TransformerConfig.head_dim=8"]
  entry.main(model + ["--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{tmp_path / 'pre'}'",
                      f"--gin.TRAIN_DATA='{tmp_path / 'text.jsonl'}'",
                      f"--gin.VOCABULARY='{tmp_path / 'spm.model'}'", "--gin.STEPS=3",
                      "--gin.DataConfig.batch_size=4", "--gin.DataConfig.seq_len=32",
                      "--gin.LoopConfig.progress_bar=False"])
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(_json.dumps({"prompt": "the cat"}) + "\n")
  work = tmp_path / "gen"
  stats = entry.main(model + [
      "--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{work}'",
      f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{tmp_path / 'pre'}'",
      "--gin.generate.config=%MODEL_CONFIG", f"--gin.generate.vocabulary='{tmp_path / 'spm.model'}'",
      "--gin.SamplingConfig.max_new_tokens=5"])
  assert stats["prompts"] == 1
  line = _json.loads((work / "generations.jsonl").read_text())
  assert 1 <= len(line["completions"][0]["tokens"]) <= 5


def test_the_sampler_and_the_generate_job_prompt_alike(hf_model_dir, tmp_path):
  import jax
  from align_jax.data import encode_prompt
  from align_jax.pipeline.generation import prompt_renderer
  from align_jax.sampling import SamplingConfig
  from align_jax.training import load_run
  texts = ["the cat sat on", "hello world"]
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
  entry.main([
      "--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{tmp_path / 'work'}'",
      f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'",
      "--gin.SamplingConfig.temperature=0.0", "--gin.SamplingConfig.max_new_tokens=8",
      "--gin.SamplingConfig.min_new_tokens=8"])
  output = (tmp_path / "work" / "generations.jsonl").read_text()
  job = [json.loads(line)["completions"][0]["tokens"] for line in output.splitlines()]

  run = load_run(str(hf_model_dir))
  vocab = run.vocab
  # One BOS policy: the job's prompt ids are BOS + the text's tokens, as training data's.
  for text in texts:
    ids = prompt_renderer(vocab)({"prompt": text})
    assert ids == encode_prompt(vocab, text) == [vocab.bos_id] + list(vocab.encode(text))
  greedy = SamplingConfig(max_new_tokens=8, min_new_tokens=8, temperature=0.0)
  result = run.sampler(batch_size=2).generate(texts, greedy, jax.random.key(0))
  assert result.tokens[:, 0].tolist() == job
  # Without BOS (what the Sampler did before) the same model continues otherwise.
  bare = [list(vocab.encode(t)) for t in texts]
  unprefixed = run.sampler(batch_size=2).generate(bare, greedy, jax.random.key(0))
  assert unprefixed.tokens[:, 0].tolist() != job
