"""The `run` configurable: the WORKDIR, the resolved config beside it, then the job."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import gin


def run(job: Callable[..., object] = gin.REQUIRED, workdir: str = gin.REQUIRED) -> object:
  """Runs `job(workdir=...)` after writing the resolved config into `workdir`."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  Path(workdir, "config.gin").write_text(gin.config_str())
  logging.info("WORKDIR: %s", workdir)
  print(f"[align_jax] WORKDIR {workdir}", flush=True)
  result = job(workdir=workdir)
  Path(workdir, "operative_config.gin").write_text(gin.operative_config_str())
  print(f"[align_jax] done; outputs in {workdir}", flush=True)
  return result
