"""The Colab notebooks of launch/colab/: each .ipynb is its jupytext source without outputs,
opens in Colab from its own link, installs through launch/colab/install.sh, and is executed
top to bottom by a test of the demo it runs (tests/notebooks.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.notebooks import COLAB, source
from tests.readme_commands import REPO

REPOSITORY = "align-jax/align_jax"
# Each notebook and the test that executes it.
EXECUTED_BY = {
    "quickstart": "tests/methods/rlhf/test_quickstart.py",
    "rlhf_demo": "tests/methods/rlhf/test_quickstart.py",
    "recite_hugging_face": "tests/methods/recite/test_recite_data.py",
    "easy_to_hard": "tests/methods/easy_to_hard/test_world_pipeline.py",
}


def _cells(notebook):
  return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells]


@pytest.mark.parametrize("name", sorted(EXECUTED_BY))
def test_each_notebook_is_its_source_opens_in_colab_and_is_executed_by_a_test(name):
  paired = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  nbformat.validate(paired)
  assert _cells(paired) == _cells(source(name)), (
      f"launch/colab/{name}.ipynb differs from its source: run "
      f"`jupytext --sync launch/colab/{name}.py`")
  code = [c for c in paired.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code)
  link = (f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/launch/colab/"
          f"{name}.ipynb")
  assert link in paired.cells[0].source
  # The first code cell installs the same way in every notebook.
  assert code[0].source == source("quickstart").cells[1].source
  assert f'execute("{name}"' in (REPO / EXECUTED_BY[name]).read_text()


def test_every_notebook_is_listed():
  assert sorted(p.stem for p in COLAB.glob("*.py")) == sorted(EXECUTED_BY)
  assert sorted(p.stem for p in COLAB.glob("*.ipynb")) == sorted(EXECUTED_BY)


def _install(tmp_path, *args, **env):
  """Runs install.sh with a stand-in interpreter that records what it was asked to run."""
  record = tmp_path / "python_args.json"
  record.unlink(missing_ok=True)
  recorder = tmp_path / "record.py"
  recorder.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
  python = tmp_path / "python"
  python.write_text(f"#!/bin/sh\nexec {sys.executable!r} {str(recorder)!r} \"$@\"\n")
  python.chmod(0o755)
  # PATH holds only the tools the script uses (and the stand-ins), so that this host's
  # own nvidia-smi, if any, is not found.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for tool in ("dirname", "sed", "head"):
    if not (bin_dir / tool).exists():
      (bin_dir / tool).symlink_to(shutil.which(tool))
  base = {k: v for k, v in os.environ.items() if k not in ("TPU_ACCELERATOR_TYPE", "JAX_VERSION")}
  base.update(PATH=str(bin_dir), PYTHON=str(python), **env)
  done = subprocess.run([shutil.which("bash"), "launch/colab/install.sh", *args], cwd=REPO,
                        env=base, capture_output=True, text=True, timeout=60)
  return done, (json.loads(record.read_text()) if record.exists() else None)


@pytest.mark.skipif(Path("/dev/accel0").exists(), reason="a TPU host: install.sh finds it")
def test_install_picks_the_jax_build_of_the_runtime(tmp_path):
  pinned = "0.10.2"
  assert f'"jax=={pinned}"' in (REPO / "setup.py").read_text()
  pip = ["-m", "pip", "install", "--quiet", str(REPO)]
  done, args = _install(tmp_path)
  assert done.returncode == 0, done.stderr
  assert args == pip and "for the cpu runtime" in done.stdout
  done, args = _install(tmp_path, TPU_ACCELERATOR_TYPE="v5litepod-1")
  assert args == pip + [f"jax[tpu]=={pinned}"], done.stderr
  # An NVIDIA GPU is one `nvidia-smi -L` lists.
  smi = tmp_path / "bin" / "nvidia-smi"
  smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA L4'\n")
  smi.chmod(0o755)
  done, args = _install(tmp_path)
  assert args == pip + [f"jax[cuda12]=={pinned}"], done.stderr
  done, args = _install(tmp_path, "cpu", JAX_VERSION="0.9.0")
  assert args == pip and "jax 0.9.0" in done.stdout
  done, args = _install(tmp_path, "npu")
  assert done.returncode == 1 and args is None
  assert "install.sh: error: unknown runtime 'npu': expected cpu, gpu or tpu" in done.stderr
