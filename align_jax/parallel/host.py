"""Host-process settings that make XLA:CPU programs run at the speed of their arithmetic.

XLA:CPU allocates a compiled program's buffers (its temporary arena: activations kept
for the backward pass, logits chunks, gradients) each time the program runs, and frees
them when it returns. glibc's malloc serves every block over 32 MiB with a fresh `mmap`
and unmaps it on `free`, so each training step touches its whole arena as new pages
and takes a page fault for every one of them. `retain_freed_host_memory` tells glibc to
keep freed memory in one heap for reuse instead (one arena for all threads, no `mmap`,
no trimming), the behaviour TCMalloc-style allocators give TensorFlow and PyTorch CPU
jobs. The price is that the process keeps its high-water mark of host memory, with some
fragmentation on top.

Only the CPU backend computes in host memory, so "auto" turns this on where JAX can run
on nothing else; on GPU and TPU hosts the host heap is left as it is.

`enable_compilation_cache` keeps compiled programs on disk (JAX's persistent compilation
cache), so a rerun, a second PPO run or another seed loads what an earlier one compiled.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os

# mallopt(3) parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")

_retained = False


def _glibc():
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
    return libc
  except (OSError, AttributeError):
    return None  # macOS, musl, Windows: no mallopt


def cpu_only() -> bool:
  """Whether this process's JAX computes on the CPU, decided without starting a backend:
  `JAX_PLATFORMS` (or `jax_platforms`) names only cpu, or no accelerator plugin is installed."""
  import jax
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return [p.strip() for p in platforms.split(",") if p.strip()] == ["cpu"]
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def retain_freed_host_memory(mode: str = "auto") -> bool:
  """Keeps host memory that programs free in the process, for the next step to reuse.

  mode: "retain" (always), "release" (leave glibc's defaults) or "auto" (retain when
  `cpu_only()`). Call it before JAX's first computation: malloc binds each thread to an
  arena at the thread's first allocation, and XLA starts its threads with the backend.
  Returns whether memory is retained (False off glibc).
  """
  global _retained
  if mode not in ("auto", "retain", "release"):
    raise ValueError(f"host_memory mode must be 'auto', 'retain' or 'release', got {mode!r}")
  if mode == "release" or (mode == "auto" and not cpu_only()):
    return _retained
  if _retained:
    return True
  libc = _glibc()
  if libc is None:
    logging.info("host_memory: not glibc; the allocator is left as it is")
    return False
  ok = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  if not ok:
    logging.warning("host_memory: mallopt refused a setting; freed memory may go back to the OS")
    return False
  _retained = True
  logging.info("host_memory: freed host memory is kept for reuse (one arena, no mmap, no trim)")
  return True


# Where compiled programs are kept between runs unless told otherwise (XDG cache folder).
DEFAULT_COMPILATION_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "align_jax", "xla")


def enable_compilation_cache(directory: str | None = DEFAULT_COMPILATION_CACHE,
                             min_compile_seconds: float = 0.5) -> str | None:
  """Keeps XLA's compiled programs in `directory` (JAX's persistent compilation cache), so
  that a program compiled once (by an earlier run, or by an earlier stage of the same
  pipeline: a second PPO run, another seed) is loaded instead of compiled again. Programs
  that compile in less than `min_compile_seconds` are not kept. None, '' or 'off' turns
  the cache off. The folder may be a gs:// URL shared by a pod's hosts. Returns the folder
  in use."""
  import jax
  if not directory or directory == "off":
    return None
  if "://" not in directory:
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("compilation cache: %s", directory)
  return directory
