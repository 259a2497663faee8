"""The Colab notebooks of launch/colab/, as the tests run them.

Each notebook is kept as a jupytext source (`NAME.py`, percent format) with its `NAME.ipynb`
made from it (no outputs). `execute(name, cwd, **parameters)` reads the source, puts a cell
setting `parameters` right after the cell tagged "parameters" (as papermill does), runs
every cell top to bottom in a fresh Python kernel started in `cwd` (nbclient), and returns
the executed notebook; a cell that raises fails the test with its traceback.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from tests.readme_commands import REPO, readme_command

COLAB = REPO / "launch" / "colab"


def source(name: str) -> nbformat.NotebookNode:
  return jupytext.read(COLAB / f"{name}.py")


def execute(name: str, cwd: Path, **parameters) -> nbformat.NotebookNode:
  notebook = source(name)
  tagged = [i for i, cell in enumerate(notebook.cells)
            if "parameters" in cell.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters'"
  injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
  notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
  NotebookClient(notebook, timeout=1800, kernel_name="python3",
                 resources={"metadata": {"path": str(cwd)}}).execute()
  return notebook


def runs_readme_command(name: str, gin_file: str) -> bool:
  """Whether the notebook passes every argument of the README's command for `gin_file`."""
  text = (COLAB / f"{name}.py").read_text()
  return all(f'"{arg}"' in text for arg in readme_command(gin_file))


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list:
  """Every output of the executed cells with the given MIME type ('text/plain',
  'image/png') or stream text ('stream')."""
  found = []
  for cell in notebook.cells:
    for output in cell.get("outputs", []):
      if kind == "stream" and output.output_type == "stream":
        found.append(output.text)
      elif kind in output.get("data", {}):
        found.append(output.data[kind])
  return found
