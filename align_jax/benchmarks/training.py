"""Training throughput of align_jax vs transformers (PyTorch, AdamW) on the same config.

For each config: tokens/s of a full training step (forward, backward, global-norm
clipping, AdamW update) at the same batch and sequence length, one framework after
the other in the same process; and the achieved FLOP/s (6 x matmul parameters +
causal attention, per token) as a fraction of the measured matmul peak of this
machine (the faster of XLA and PyTorch on a square matmul in the config's compute
dtype). On a GPU the config trains in mixed precision (float32 parameters and AdamW
state, bfloat16 compute; PyTorch under autocast) and the report adds MFU against the
chip's dense bfloat16 datasheet peak. Host memory is kept for reuse as in training jobs
(`align_jax.parallel.host`; `--host_memory release` for glibc's default) and the
report gives the page faults per step.

  python -m align_jax.benchmarks.training [--configs tiny,d512] [--steps 4 --repeats 3]
  python -m align_jax.benchmarks.training --configs 1b --steps 10   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.benchmarks.common import machine, peak_rss_mb
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.parallel.host import retain_freed_host_memory
from align_jax.training import (OptimizerConfig, init_train_state, make_lm_step, make_optimizer)

CONFIGS = {
    "tiny": dict(d_model=64, layers=2, vocab=512, heads=4, kv_heads=2, mlp_dim=192,
                 batch=8, seq=256),
    "d512": dict(d_model=512, layers=8, vocab=32000, heads=8, kv_heads=8, mlp_dim=1376,
                 batch=8, seq=256),
    # About 1B parameters (Llama-style), for accelerators.
    "1b": dict(d_model=2048, layers=16, vocab=32000, heads=16, kv_heads=16, mlp_dim=5504,
               batch=8, seq=2048, dtype="bfloat16", attention_impl="cudnn"),
}

# Dense bfloat16 matrix throughput by the vendors' datasheets (no sparsity), FLOP/s.
DATASHEET_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> dict[str, float]:
  """Square-matmul FLOP/s of XLA and PyTorch in `dtype`: the best of `repeats` timed
  products each (a peak is what the machine can do, not its average under noise)."""
  import torch
  flops = 2 * size ** 3
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = torch.rand(size, size, device=device).to(getattr(torch, dtype))
  t @ t
  _sync(device)
  xla_times, torch_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    xla_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    t @ t
    _sync(device)
    torch_times.append(time.perf_counter() - start)
  xla, torch_peak = flops / min(xla_times), flops / min(torch_times)
  return {"xla_gflops": xla / 1e9, "torch_gflops": torch_peak / 1e9,
          "peak_gflops": max(xla, torch_peak) / 1e9, "dtype": dtype, "size": size}


def _sync(device: str) -> None:
  if device == "cuda":
    import torch
    torch.cuda.synchronize()


def datasheet_peak() -> float | None:
  """The dense bfloat16 datasheet FLOP/s of the first device's chip (None if unlisted)."""
  kind = jax.devices()[0].device_kind
  return next((v for k, v in DATASHEET_BF16.items() if k in kind), None)


def flops_per_token(config, seq: int) -> float:
  """Training FLOPs per token at length `seq`: 6 x matmul parameters + causal attention."""
  d, layers = config.d_model, config.num_layers
  matmul_params = layers * (d * config.head_dim * (2 * config.num_heads + 2 * config.num_kv_heads)
                            + 3 * d * config.mlp_dim) + d * config.vocab_size
  attention = 12 * layers * config.num_heads * config.head_dim * seq / 2  # causal half
  return 6 * matmul_params + attention


def bench_config(name: str, spec: dict, steps: int, repeats: int) -> dict:
  """Training throughput of align_jax and transformers on one config, with align_jax's
  FLOP/s, step breakdown and page faults per step."""
  import torch
  import transformers
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  dtype = spec.get("dtype", "float32")
  config = TransformerConfig(
      vocab_size=spec["vocab"], d_model=spec["d_model"], num_layers=spec["layers"],
      num_heads=spec["heads"], num_kv_heads=spec["kv_heads"],
      head_dim=spec["d_model"] // spec["heads"], mlp_dim=spec["mlp_dim"],
      max_seq_len=spec["seq"] + 1, dtype=dtype,
      attention_impl=spec.get("attention_impl", "native"))
  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.d_model,
      intermediate_size=config.mlp_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      max_position_embeddings=config.max_seq_len, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  torch.manual_seed(0)
  with torch.device(device):
    hf_model = transformers.LlamaForCausalLM(hf_config)  # float32 parameters
  hf_model.train()
  batch, seq = spec["batch"], spec["seq"]
  rng = np.random.RandomState(0)
  tokens = rng.randint(3, spec["vocab"], (batch, seq + 1)).astype(np.int32)

  opt_config = OptimizerConfig(learning_rate=1e-4, warmup_steps=0, total_steps=1000,
                               max_grad_norm=1.0, b2=0.999)
  optimizer = make_optimizer(opt_config)
  model = Transformer(config)
  state = init_train_state(init_params(model, jax.random.key(0)), optimizer, 0)
  step = jax.jit(make_lm_step(model, optimizer, opt_config), donate_argnums=(0,))
  jbatch = {"input_tokens": jnp.asarray(tokens[:, :-1]), "target_tokens": jnp.asarray(tokens[:, 1:]),
            "loss_weights": jnp.ones((batch, seq), jnp.float32),
            "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq)),
            "segment_ids": jnp.ones((batch, seq), jnp.int32)}
  start = time.perf_counter()
  state, m = step(state, jbatch, None)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - start

  # PyTorch's own fastest AdamW on a GPU (fused), its default on the CPU.
  torch_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4, weight_decay=0.0,
                                **({"fused": True} if device == "cuda" else {}))
  theirs_state = {"model": hf_model, "optimizer": torch_opt}  # freed before the breakdown
  del hf_model, torch_opt
  input_ids = torch.tensor(tokens[:, :-1], dtype=torch.long, device=device)
  labels = torch.tensor(tokens[:, 1:], dtype=torch.long, device=device)
  autocast = torch.autocast(device, dtype=getattr(torch, dtype), enabled=dtype != "float32")

  def torch_step():
    hf_model, torch_opt = theirs_state["model"], theirs_state["optimizer"]
    torch_opt.zero_grad(set_to_none=True)
    with autocast:
      logits = hf_model(input_ids).logits
      loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                               labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf_model.parameters(), 1.0)
    torch_opt.step()
    return loss

  holder = {"state": state, "metrics": None}

  def our_step():
    holder["state"], holder["metrics"] = step(holder["state"], jbatch, None)

  # One framework after the other: in interleaved blocks, each side's first step would
  # page-fault through the heap the other has just freed.
  ours, faults = _timed_blocks(our_step, lambda: jax.block_until_ready(holder["metrics"]),
                               steps, repeats)
  theirs, _ = _timed_blocks(torch_step, lambda: _sync(device), steps, repeats)
  state = holder.pop("state")
  theirs_state.clear()
  tokens_per_step = batch * seq
  breakdown = step_breakdown(model, state.params, optimizer, state.opt_state, jbatch)
  ours_tps, theirs_tps = tokens_per_step / ours, tokens_per_step / theirs
  fpt = flops_per_token(config, seq)
  return {"config": spec | {"params": config.num_params}, "compile_s": compile_s,
          "align_jax_tokens_per_s": ours_tps, "transformers_tokens_per_s": theirs_tps,
          "ratio_vs_transformers": ours_tps / theirs_tps,
          "flops_per_token": fpt, "align_jax_gflops": ours_tps * fpt / 1e9,
          "transformers_gflops": theirs_tps * fpt / 1e9, "align_jax_breakdown": breakdown,
          "align_jax_page_faults_per_step": faults}


def _timed_blocks(run, sync, steps: int, repeats: int) -> tuple[float, float]:
  """(seconds per step, minor page faults per step) of `run`, medians over `repeats`
  blocks of `steps` calls, after an untimed call."""
  # The other framework's worker threads spin for a while after their last parallel
  # region (OpenMP's wait policy); the pause keeps that out of this side's timing.
  time.sleep(1.0)
  run()
  sync()
  times, faults = [], []
  for _ in range(repeats):
    start, faults_before = time.perf_counter(), _page_faults()
    for _ in range(steps):
      run()
    sync()
    times.append((time.perf_counter() - start) / steps)
    faults.append((_page_faults() - faults_before) / steps)
  return float(np.median(times)), float(np.median(faults))


def _page_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _median_time(fn, *args, repeats: int = 3) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def step_breakdown(model, params, optimizer, opt_state, batch) -> dict[str, float]:
  """Seconds of the parts of a training step, each compiled alone: the decoder layers'
  forward+backward (no output head), the output head + cross-entropy forward+backward,
  and the AdamW update. Shows where XLA:CPU spends the step."""
  from align_jax.training.losses import head_chunk_rows, output_matrix, output_nll_sums
  config = model.config

  def layers(p):
    hidden = model.apply({"params": p}, batch["input_tokens"], batch["positions"],
                         batch["segment_ids"], output="hidden")
    return jnp.sum(hidden * hidden)

  hidden = jax.random.normal(jax.random.key(0), batch["input_tokens"].shape + (config.d_model,),
                             config.dtype)

  def head(w_out, h):
    return output_nll_sums(h, w_out.astype(h.dtype), batch["target_tokens"],
                           batch["loss_weights"], head_chunk_rows(config.vocab_size))[0]

  def update(p, o):
    grads = jax.tree.map(jnp.ones_like, p)
    updates, o = optimizer.update(grads, o, p)
    return jax.tree.map(jnp.add, p, updates), o

  tokens = int(np.prod(batch["input_tokens"].shape))
  head_flops = 6 * tokens * config.d_model * config.vocab_size
  result = {
      "layers_fwd_bwd_s": _median_time(jax.jit(jax.grad(layers)), params),
      "head_loss_fwd_bwd_s": _median_time(jax.jit(jax.grad(head, argnums=(0, 1))),
                                          output_matrix(model, params), hidden),
      "adamw_update_s": _median_time(jax.jit(update), params, opt_state),
  }
  result["head_loss_gflops"] = head_flops / result["head_loss_fwd_bwd_s"] / 1e9
  layer_flops = tokens * (flops_per_token(config, batch["input_tokens"].shape[1])
                          - 6 * config.d_model * config.vocab_size)
  result["layers_gflops"] = layer_flops / result["layers_fwd_bwd_s"] / 1e9
  return result


def main(argv=None) -> dict:
  """Runs the configs the flags name; prints the report as one JSON line and returns it."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="tiny,d512")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--attention_impl", choices=("native", "xla", "cudnn"),
                      help="override the configs' attention implementation")
  parser.add_argument("--host_memory", default="auto", choices=("auto", "retain", "release"),
                      help="glibc heap policy (align_jax.parallel.host); 'release' to compare")
  args = parser.parse_args(argv)
  # As `align_jax.main` does, before JAX starts its threads.
  retained = retain_freed_host_memory(args.host_memory)
  peaks, results = {}, {}
  for name in args.configs.split(","):
    dtype = CONFIGS[name].get("dtype", "float32")
    if dtype not in peaks:
      accelerator = jax.default_backend() != "cpu"
      peaks[dtype] = matmul_peak(8192 if accelerator else 2048, dtype=dtype)
    peak = peaks[dtype]
    spec = CONFIGS[name] | ({"attention_impl": args.attention_impl} if args.attention_impl else {})
    result = bench_config(name, spec, args.steps, args.repeats)
    result["align_jax_fraction_of_peak"] = result["align_jax_gflops"] / peak["peak_gflops"]
    result["transformers_fraction_of_peak"] = result["transformers_gflops"] / peak["peak_gflops"]
    datasheet = datasheet_peak()
    if datasheet and dtype == "bfloat16":
      result["datasheet_bf16_tflops"] = datasheet / 1e12
      result["align_jax_mfu"] = result["align_jax_gflops"] * 1e9 / datasheet
      result["transformers_mfu"] = result["transformers_gflops"] * 1e9 / datasheet
    results[name] = result
  report = {"benchmark": "training", "machine": machine(),
            "device_kind": jax.devices()[0].device_kind, "host_memory_retained": retained,
            "matmul_peak": peaks,
            "results": results, "peak_rss_mb": peak_rss_mb()}
  print(json.dumps(report))
  return report


if __name__ == "__main__":
  main()
