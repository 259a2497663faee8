"""Retained host memory: a program's temporaries stop costing page faults on each run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from align_jax.parallel import host

# A program with a 64 MiB temporary (over glibc's 32 MiB mmap ceiling), run 5 times;
# prints the minor page faults per run.
_PROBE = textwrap.dedent("""
    import json, resource, sys
    from align_jax.parallel import host
    retained = host.retain_freed_host_memory(sys.argv[1])
    import jax, jax.numpy as jnp
    a, b = jnp.ones((512, 512)), jnp.ones((512, 32768))
    f = jax.jit(lambda a, b: (a @ b).sum(0))
    f(a, b).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      out = f(a, b).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    print(json.dumps({"retained": retained, "faults": faults, "sum": float(out.sum())}))
""")


def _probe(mode):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host._glibc() is None, reason="mallopt is glibc's")
def test_retained_memory_removes_the_page_faults_of_each_run():
  released, retained = _probe("release"), _probe("retain")
  assert not released["retained"] and retained["retained"]
  # 64 MiB of fresh 4 KiB pages per run by default; reused pages when retained.
  assert released["faults"] > 8000
  assert retained["faults"] < released["faults"] / 20
  assert retained["sum"] == released["sum"] == 512 * 512 * 32768


def test_auto_follows_the_platforms():
  import jax
  saved = jax.config.jax_platforms
  try:
    jax.config.update("jax_platforms", "cuda,cpu")
    assert not host.cpu_only()
    assert host.retain_freed_host_memory("auto") is host._retained  # left as it was
    jax.config.update("jax_platforms", "cpu")
    assert host.cpu_only()
  finally:
    jax.config.update("jax_platforms", saved)


def test_bad_mode_names_the_choices():
  with pytest.raises(ValueError, match="'auto', 'retain' or 'release'"):
    host.retain_freed_host_memory("keep")
