"""The generate job: prompts from a jsonl file in, completions with logprobs out.

Input lines hold `prompt` (text) or `prompt_tokens` (ids); any other fields are
copied to the output. Output lines (`generations.jsonl` in WORKDIR) add
`completions`: one entry per sample with `text`, `tokens`, `logprobs` (under the
sampling distribution), `model_logprobs` (under the unmodified model) and
`finished` (ended by EOS / a stop string rather than the token limit). The output is
written in chunks (`align_jax.pipeline.generation`): an interrupted job resumes when
the same command runs again; a finished output is never overwritten.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules
from align_jax.pipeline.generation import (check_prompt_record, generate_to_jsonl, is_finished,
                                           prompt_renderer)
from align_jax.sampling import SamplingConfig
from align_jax.training.runs import load_run


def generate_job(workdir: str, prompts_file: str, checkpoint: str,
                 sampling: SamplingConfig = SamplingConfig(), *,
                 config: TransformerConfig | None = None, vocabulary: str | None = None,
                 chat_template: str | None = None, add_bos: bool = True,
                 mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
                 batch_size: int = 16, seed: int = 0, chunk_size: int = 64,
                 output_name: str = "generations.jsonl",
                 allow_foreign_vocabulary: bool = False) -> dict[str, Any]:
  """Generates completions for every prompt of `prompts_file` into WORKDIR.

  checkpoint: any run `align_jax.training.load_run` reads: a Hugging Face model
    directory (its tokenizer is used unless `vocabulary` names another one), an
    align_jax training or PPO WORKDIR (its recorded model and vocabulary unless
    `config` / `vocabulary` are given, which are then checked against it), a LoRA run.
  config: for a Hugging Face directory optional (its dtype, param_dtype and
    scan_layers override the checkpoint's).
  chat_template: render text prompts as a user turn of this template (e.g. 'llama3').
  add_bos: prepend BOS to text prompts unless the chat template put it there, as training
    data and the Sampler do (`align_jax.data.encode_prompt`): a prompt gives the same ids
    here as in `Sampler.generate`.
  chunk_size: prompts generated and written at a time (the resume granularity).
  allow_foreign_vocabulary: use `vocabulary` with a Hugging Face checkpoint whose own
    tokenizer differs (refused otherwise). Either way the model's vocab_size must fit the
    vocabulary (`align_jax.training.runs.check_model_vocabulary`).
  """
  output_path = fs.join(workdir, output_name)
  if is_finished(output_path):
    raise FileExistsError(f"{output_path} already exists; choose another WORKDIR or "
                          "output_name (nothing was generated)")
  records = list(read_jsonl(prompts_file, check_prompt_record))
  if not records:
    raise ValueError(f"{prompts_file}: no prompts")
  loaded = load_run(checkpoint, config=config, vocabulary=vocabulary, mesh=mesh, rules=rules,
                    allow_foreign_vocabulary=allow_foreign_vocabulary)
  if loaded.vocab is None:
    raise ValueError(f"{checkpoint} names no vocabulary: bind generate.vocabulary (a "
                     "sentencepiece .model file or tokenizer directory)")
  stats = generate_to_jsonl(
      output_path, records, prompt_renderer(loaded.vocab, chat_template, add_bos),
      loaded.sampler(batch_size=batch_size), sampling, seed=seed, chunk_size=chunk_size,
      settings={"checkpoint": checkpoint, "prompts_file": prompts_file,
                "chat_template": chat_template, "add_bos": add_bos}, desc="generate")
  stats = {"prompts": len(records), "samples_per_prompt": sampling.num_samples, **stats}
  with fs.open(fs.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 0, **stats}) + "\n")
  logging.info("wrote %s: %s", output_path, stats)
  print(f"generated {stats['generated_tokens']} tokens for {len(records)} prompts in "
        f"{stats['seconds']:.1f}s ({stats['tokens_per_second']:.1f} tokens/s) -> {output_path}")
  return stats
