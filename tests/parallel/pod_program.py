"""The user's workflow as one program, run by every process of a pod (or by one process).

    python tests/parallel/pod_program.py OUT DATA [all|train]

DATA holds the README's small files (text.jsonl, sft.jsonl, pairs.jsonl, prompts.jsonl)
and vocab/spm.model. Through `align_jax.main`, on the 8-device mesh of gin/mesh/cpu8.gin
(fsdp 4 x tensor 2, so on a pod the parameters are split across processes): pretraining
(4 steps, a checkpoint at 2 and 4, then resumed to 6 steps: an orbax save and restore),
SFT and a reward model from it, one PPO iteration from those, and the generate job. Then,
in the program itself: the SFT model's sampler generating and scoring, one pipeline
stage (its completion record), and this host's rows of the training data's first
batches (packed, and one document a row cut after the pod's longest row). Every run's WORKDIR is under OUT; each process writes OUT/process_K.json with
what it saw (the job results and its own data rows), so the test compares a pod's
processes with a 1-process run. "train": pretraining (4 steps, no restore), the pipeline
stage and the data rows only. The data has 4 shards (`DataConfig.data_shards`), so any
pod of 1, 2 or 4 processes reads the same batches.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from align_jax import main as entry  # noqa: E402

SHARDS = 4
MODEL = ["--gin_file=gin/models/tiny.gin"]
MESH = "--gin_file=gin/mesh/cpu8.gin"   # after the run file: its mesh wins


def _run(run_file: str, workdir: str, *bindings: str) -> object:
  return entry.main([*MODEL, f"--gin_file={run_file}", MESH, f"--gin.WORKDIR='{workdir}'",
                     *bindings])


def main(out: str, data: str, parts: str = "all") -> None:
  vocab = f"--gin.VOCABULARY='{data}/vocab/spm.model'"
  small = ["--gin.OptimizerConfig.warmup_steps=1", "--gin.DataConfig.seq_len=64",
           f"--gin.DataConfig.data_shards={SHARDS}"]
  pre = f"{out}/pre"
  pretrain = ["gin/runs/pretrain.gin", pre, f"--gin.TRAIN_DATA='{data}/text.jsonl'", vocab,
              "--gin.DataConfig.batch_size=8", "--gin.LoopConfig.checkpoint_every=2", *small]
  _run(*pretrain, "--gin.STEPS=4")
  if parts == "all":
    _run(*pretrain, "--gin.STEPS=6")   # restores step 4's checkpoint, goes on to 6
    _rest(out, data, vocab, small)
  _observe(out, data, parts)


def _rest(out: str, data: str, vocab: str, small: list[str]) -> None:
  pre = f"{out}/pre"
  _run("gin/runs/sft.gin", f"{out}/sft", f"--gin.TRAIN_DATA='{data}/sft.jsonl'", vocab,
       f"--gin.INIT_FROM='{pre}'", "--gin.STEPS=3", "--gin.DataConfig.batch_size=8",
       "--gin.LoopConfig.checkpoint_every=3", *small)
  _run("gin/runs/reward.gin", f"{out}/reward", f"--gin.TRAIN_DATA='{data}/pairs.jsonl'",
       vocab, f"--gin.INIT_FROM='{pre}'", "--gin.STEPS=3", "--gin.DataConfig.batch_size=8",
       "--gin.LoopConfig.checkpoint_every=3", "--gin.DataConfig.pad_to_multiple_of=16",
       *small)
  _run("gin/runs/ppo.gin", f"{out}/ppo", f"--gin.PROMPTS='{data}/prompts.jsonl'", vocab,
       f"--gin.POLICY_INIT='{out}/sft'", f"--gin.REWARD_MODEL='{out}/reward'",
       "--gin.STEPS=1", "--gin.PPOConfig.rollout_batch_size=8",
       "--gin.PPOConfig.mini_batch_size=4", "--gin.PPOConfig.num_epochs=1",
       "--gin.PPOConfig.max_new_tokens=8", "--gin.LoopConfig.checkpoint_every=1")
  entry.main(["--gin_file=gin/runs/generate.gin", MESH, f"--gin.WORKDIR='{out}/gen'",
              f"--gin.PROMPTS='{data}/prompts.jsonl'", f"--gin.CHECKPOINT='{out}/sft'",
              "--gin.SamplingConfig.max_new_tokens=8", "--gin.generate.batch_size=8"])



def _observe(out: str, data: str, parts: str) -> None:
  import jax
  from align_jax import fs
  from align_jax.data.pipeline import BatchIterator
  from align_jax.data.vocab import load_vocabulary
  from align_jax.parallel import create_mesh
  from align_jax.pipeline import Pipeline, Stage
  from align_jax.sampling import SamplingConfig
  from align_jax.training.runs import load_run

  seen: dict[str, object] = {"process": jax.process_index(), "processes": jax.process_count(),
                             "devices": jax.device_count()}
  if parts == "all":
    run = load_run(f"{out}/sft", mesh=create_mesh((1, 4, 2)))
    prompts = [json.loads(line)["prompt"] for line in open(f"{data}/prompts.jsonl")][:8]
    sampler = run.sampler(batch_size=8)
    generated = sampler.generate(prompts, SamplingConfig(max_new_tokens=8, temperature=1.0),
                                 jax.random.key(3))
    seen["generated"] = [list(map(int, t[0])) for t in generated.tokens]
    seen["scores"] = [s.tolist()
                      for s in sampler.score(prompts, [t[0] for t in generated.texts])]

  writes = []   # the completion records this process writes
  write = fs.write_atomically

  def counted(path, *args, **kwargs):
    writes.append(path)
    return write(path, *args, **kwargs)
  fs.write_atomically = counted
  try:
    result = Pipeline(f"{out}/pipeline", [
        Stage("only", lambda stage_dir, results: {"processes": jax.process_count()})]).run()
  finally:
    fs.write_atomically = write
  seen["pipeline"] = {"result": result["only"],
                      "completion_writes": [os.path.relpath(p, out) for p in writes]}

  vocabulary = load_vocabulary(f"{data}/vocab/spm.model")
  texts = [json.loads(line)["text"] for line in open(f"{data}/text.jsonl")]
  batches = BatchIterator([{"tokens": np.array(vocabulary.encode(t))} for t in texts],
                          kind="lm", batch_size=8, seq_len=64, seed=0, data_shards=SHARDS)
  seen["rows"] = [next(batches)["input_tokens"].tolist() for _ in range(3)]
  # One document a row, each batch cut after its longest row: the hosts' own longest rows
  # differ, and they agree on the pod's longest (the 1-process run's length).
  cut = BatchIterator([{"tokens": np.array(vocabulary.encode(t))} for t in texts],
                      kind="lm", batch_size=8, seq_len=128, seed=1, pack=False,
                      data_shards=SHARDS, pad_to_multiple_of=4)
  seen["cut_rows"] = [next(cut)["input_tokens"].tolist() for _ in range(3)]
  with open(f"{out}/process_{jax.process_index()}.json", "w") as f:
    json.dump(seen, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
