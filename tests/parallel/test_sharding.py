"""Sharding on 8 simulated CPU devices: parameters are split, results equal one device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.sharding import PartitionSpec as P

from align_jax.parallel import (DEFAULT_RULES, create_mesh, initialize_distributed,
                                logical_to_spec, resolve_mesh_shape)

_WORKER = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from align_jax.models import Transformer, TransformerConfig, init_params, param_shardings
    from align_jax.parallel import DEFAULT_RULES, create_mesh, sharding_context

    assert jax.device_count() == 8, jax.devices()
    config = TransformerConfig(vocab_size=96, num_layers=2, d_model=32, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64)
    model = Transformer(config)
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, config.vocab_size)

    def loss_fn(params, tokens):
      logits = model.apply({"params": params}, tokens)
      logprobs = jax.nn.log_softmax(logits[:, :-1])
      return -jnp.take_along_axis(logprobs, tokens[:, 1:, None], -1).mean()

    def run(mesh):
      params = init_params(model, jax.random.key(0), mesh, DEFAULT_RULES)
      batch = jax.device_put(tokens, NamedSharding(mesh, P(("data", "fsdp"))))
      with sharding_context(mesh, DEFAULT_RULES):
        shardings = param_shardings(model, mesh, DEFAULT_RULES)
        step = jax.jit(jax.value_and_grad(loss_fn), in_shardings=(shardings, batch.sharding),
                       out_shardings=(NamedSharding(mesh, P()), shardings))
        loss, grads = step(params, batch)
      return params, loss, grads

    mesh8 = create_mesh((1, 4, 2))
    mesh1 = create_mesh((1, 1, 1), devices=jax.devices()[:1])
    params8, loss8, grads8 = run(mesh8)
    params1, loss1, grads1 = run(mesh1)
    q = params8["layers_0"]["attention"]["q_kernel"]
    out = {
        "q_spec": str(q.sharding.spec), "q_shard": list(q.addressable_shards[0].data.shape),
        "q_devices": len(q.sharding.device_set),
        "embed_spec": str(params8["embedder"]["embedding"].sharding.spec),
        "mlp_spec": str(params8["layers_1"]["mlp"]["down_kernel"].sharding.spec),
        "grad_q_spec": str(grads8["layers_0"]["attention"]["q_kernel"].sharding.spec),
        "init_gap": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                        for a, b in zip(jax.tree.leaves(params8), jax.tree.leaves(params1))),
        "loss8": float(loss8), "loss1": float(loss1),
        "grad_gap": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                        for a, b in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1))),
        "grad_scale": max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(grads1)),
    }
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_fsdp_tensor_mesh_shards_params_and_matches_one_device():
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  result = json.loads(line[len("RESULT "):])
  # q_kernel [embed, heads, head_dim]: embed over fsdp (4), heads over tensor (2).
  assert result["q_spec"] == "P('fsdp', 'tensor')"
  assert result["q_shard"] == [8, 2, 8] and result["q_devices"] == 8
  assert result["embed_spec"] == "P('tensor', 'fsdp')"
  assert result["mlp_spec"] == "P('tensor', 'fsdp')"
  assert result["grad_q_spec"] == "P('fsdp', 'tensor')"
  assert result["init_gap"] == 0.0  # sharded initialisation draws the same numbers
  assert abs(result["loss8"] - result["loss1"]) <= 1e-5
  assert result["grad_gap"] <= 1e-5 and result["grad_scale"] > 1e-3


def test_rules_resolve_with_divisibility_fallback():
  mesh = create_mesh((1, 1, 1))
  # A 1-device mesh shards nothing.
  assert logical_to_spec(("embed", "kv_heads", "head_dim"), DEFAULT_RULES, mesh) == P()
  fake = type("FakeMesh", (), {"shape": {"data": 2, "fsdp": 4, "tensor": 2}})()
  assert logical_to_spec(("embed", "heads", "head_dim"), DEFAULT_RULES, fake, (64, 8, 16)) == \
      P("fsdp", "tensor")
  # One key/value head cannot be split over tensor=2: it stays replicated.
  assert logical_to_spec(("embed", "kv_heads", "head_dim"), DEFAULT_RULES, fake, (64, 1, 16)) == \
      P("fsdp")
  # Batch over data and fsdp together; when only data divides, just data.
  assert logical_to_spec(("act_batch", "act_length"), DEFAULT_RULES, fake, (16, 5)) == \
      P(("data", "fsdp"))
  assert logical_to_spec(("act_batch", "act_length"), DEFAULT_RULES, fake, (2, 5)) == P("data")
  with pytest.raises(KeyError, match="logical axis 'nonsense' has no sharding rule"):
    logical_to_spec(("nonsense",), DEFAULT_RULES, fake, (4,))


def test_mesh_shape_resolution_and_errors():
  assert resolve_mesh_shape((1, -1, 2), 8) == (1, 4, 2)
  assert resolve_mesh_shape((2, 2, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    resolve_mesh_shape((-1, -1, 1), 8)
  with pytest.raises(ValueError, match="needs 4 devices but 8 are available"):
    resolve_mesh_shape((1, 2, 2), 8)
  with pytest.raises(ValueError, match="not divisible"):
    resolve_mesh_shape((1, -1, 3), 8)


def test_distributed_start_is_a_no_op_on_one_host(monkeypatch):
  for var in ("ALIGN_JAX_COORDINATOR", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
              "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  assert initialize_distributed() is False
  assert jax.process_count() == 1
