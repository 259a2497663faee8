"""The generate job: prompts from a jsonl file in, completions with logprobs out.

Input lines hold `prompt` (text) or `prompt_tokens` (ids); any other fields are
copied to the output. Output lines (`generations.jsonl` in WORKDIR) add
`completions`: one entry per sample with `text`, `tokens`, `logprobs` (under the
sampling distribution), `model_logprobs` (under the unmodified model) and
`finished` (ended by EOS / a stop string rather than the token limit).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
from jax.sharding import Mesh
from tqdm import tqdm

from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.models import Transformer, TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.sampling.engine import Sampler
from align_jax.sampling.strategies import SamplingConfig


def _check_prompt(record: dict[str, Any]) -> str | None:
  if "prompt" in record:
    return None if isinstance(record["prompt"], str) else "field 'prompt' must be a string"
  if "prompt_tokens" in record:
    tokens = record["prompt_tokens"]
    if isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens):
      return None
    return "field 'prompt_tokens' must be a non-empty list of integers"
  return "missing field 'prompt' (text) or 'prompt_tokens' (token ids)"


def load_model(checkpoint: str, config: TransformerConfig | None, mesh: Mesh,
                rules: LogicalRules, vocab):
  """(config, params) from a Hugging Face directory or an align_jax training WORKDIR."""
  if os.path.exists(os.path.join(checkpoint, "config.json")):
    from align_jax.hf import load_checkpoint
    overrides = {}
    if config is not None:
      overrides = dict(dtype=config.dtype, param_dtype=config.param_dtype,
                       scan_layers=config.scan_layers)
    return load_checkpoint(checkpoint, mesh, rules, **overrides)
  if config is None:
    raise ValueError(f"{checkpoint} is not a Hugging Face directory (no config.json), so it is "
                     "read as an align_jax run; bind generate.config (the model's "
                     "TransformerConfig, e.g. %MODEL_CONFIG) and generate.vocabulary")
  from align_jax.training.lm_trainer import load_initial_params, vocabulary_record
  return load_initial_params(checkpoint, config, mesh, rules, seed=0,
                             vocab_record=vocabulary_record(vocab))


def generate_job(workdir: str, prompts_file: str, checkpoint: str,
                 sampling: SamplingConfig = SamplingConfig(), *,
                 config: TransformerConfig | None = None, vocabulary: str | None = None,
                 chat_template: str | None = None, add_bos: bool = True,
                 mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                 batch_size: int = 16, seed: int = 0,
                 output_name: str = "generations.jsonl") -> dict[str, Any]:
  """Generates completions for every prompt of `prompts_file` into WORKDIR.

  checkpoint: a Hugging Face model directory (its tokenizer is used unless
    `vocabulary` names another one), or an align_jax training WORKDIR (its latest
    checkpoint; then `config` and `vocabulary` are required and checked against it).
  config: for a Hugging Face directory optional (its dtype, param_dtype and
    scan_layers override the checkpoint's).
  chat_template: render text prompts as a user turn of this template (e.g. 'llama3').
  add_bos: prepend BOS to text prompts (ignored with a chat template, which adds its own).
  """
  output_path = os.path.join(workdir, output_name)
  if os.path.exists(output_path):
    raise FileExistsError(f"{output_path} already exists; choose another WORKDIR or "
                          "output_name (nothing was generated)")
  records = list(read_jsonl(prompts_file, _check_prompt))
  if not records:
    raise ValueError(f"{prompts_file}: no prompts")
  mesh = mesh or create_mesh()
  from align_jax.data.vocab import load_vocabulary
  if vocabulary is None and not os.path.exists(os.path.join(checkpoint, "config.json")):
    raise ValueError(f"{checkpoint} is an align_jax run: bind generate.vocabulary (its "
                     "sentencepiece .model file or tokenizer directory)")
  vocab = load_vocabulary(vocabulary or checkpoint)
  model_config, params = load_model(checkpoint, config, mesh, rules, vocab)

  template = get_template(chat_template) if chat_template else None
  prompts: list[list[int]] = []
  for record in records:
    if "prompt_tokens" in record:
      prompts.append(list(record["prompt_tokens"]))
    elif template is not None:
      rendered = template.render([{"role": "user", "content": record["prompt"]}], vocab,
                                 add_generation_prompt=True)
      prompts.append(rendered.token_ids.tolist())
    else:
      bos = [vocab.bos_id] if add_bos and vocab.bos_id is not None and vocab.bos_id >= 0 else []
      prompts.append(bos + list(vocab.encode(record["prompt"])))

  sampler = Sampler(Transformer(model_config), params, vocab=vocab, mesh=mesh, rules=rules,
                    batch_size=batch_size)
  rows = len(prompts) * sampling.num_samples
  start = time.perf_counter()
  with tqdm(total=rows, desc="generate", unit="row", dynamic_ncols=True) as bar:
    def progress(rows_done: int, tokens_done: int) -> None:
      bar.update(rows_done - bar.n)
      elapsed = time.perf_counter() - start
      bar.set_postfix(prompts=f"{rows_done // sampling.num_samples}/{len(prompts)}",
                      tok_per_s=f"{tokens_done / max(elapsed, 1e-9):.1f}")
    result = sampler.generate(prompts, sampling, jax.random.key(seed), progress)
  seconds = time.perf_counter() - start

  def output_records():
    for i, record in enumerate(records):
      completions = []
      for s in range(sampling.num_samples):
        length = int(result.lengths[i, s])
        completions.append({
            "text": result.texts[i][s] if result.texts else None,
            "tokens": result.tokens[i, s, :length].tolist(),
            "logprobs": [round(float(x), 6) for x in result.logprobs[i, s, :length]],
            "model_logprobs": [round(float(x), 6) for x in result.model_logprobs[i, s, :length]],
            "finished": bool(result.finished[i, s]),
        })
      yield {**record, "completions": completions}

  if jax.process_index() == 0:
    write_jsonl(output_path, output_records())
  stats = {"prompts": len(prompts), "samples_per_prompt": sampling.num_samples,
           "generated_tokens": result.num_generated_tokens, "seconds": seconds,
           "tokens_per_second": result.num_generated_tokens / max(seconds, 1e-9)}
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 0, **stats}) + "\n")
  logging.info("wrote %s: %s", output_path, stats)
  print(f"generated {stats['generated_tokens']} tokens for {len(prompts)} prompts in "
        f"{seconds:.1f}s ({stats['tokens_per_second']:.1f} tokens/s) -> {output_path}")
  return stats
