"""The export job: any run `load_run` reads, written as a Hugging Face directory."""

from __future__ import annotations

from typing import Any

from jax.sharding import Mesh

from align_jax import fs
from align_jax.parallel import DEFAULT_RULES, LogicalRules
from align_jax.training.runs import export_hf, is_hf_dir, load_run


def export_job(workdir: str, run: str, *, vocabulary: str | None = None,
               mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES) -> dict[str, Any]:
  """Writes `run` (an align_jax, LoRA or PPO run, or a Hugging Face directory) to
  WORKDIR/hf_export with its tokenizer files: a causal LM, or a one-label sequence
  classifier for a reward model. vocabulary: the tokenizer to ship when the run does
  not record its vocabulary file."""
  loaded = load_run(run, vocabulary=vocabulary, mesh=mesh, rules=rules)
  source = vocabulary or loaded.record.get("vocabulary_file") or (run if is_hf_dir(run) else None)
  if source is None:
    raise ValueError(f"{run} records no vocabulary file; bind export.vocabulary so the export "
                     "ships a tokenizer")
  directory = export_hf(fs.join(workdir, "hf_export"), loaded.config, loaded.params,
                        source)
  kind = "reward model (sequence classifier)" if loaded.head else "causal language model"
  print(f"[align_jax] exported {run} as a {kind} to {directory}", flush=True)
  return {"hf_export": directory, "kind": kind}
