"""The shell commands of README.md and launch/README.md, as the tests run them.

`commands()` reads every ```bash block, joins continued lines and splits each command the
way the shell would (`shlex`); `align_jax_args` finds the arguments a command passes to
`python -m align_jax.main` (directly, after `launch/tpu/run.sh --` or after
`launch/gpu/multinode.sh`). Tests run those arguments as written, adding only `--gin.`
flags that shrink sizes and steps; `readme_command(gin_file)` gives a demo's test the
arguments of the README command that names its gin file.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "launch/README.md")
ENTRY = ["python", "-m", "align_jax.main"]
POD = ("python", "-m", "align_jax.parallel.local_pod")


@dataclasses.dataclass(frozen=True)
class Command:
  document: str
  line: int
  text: str
  argv: tuple[str, ...]

  def __str__(self) -> str:
    return f"{self.document}, line {self.line}: {self.text}"


def commands(document: str) -> list[Command]:
  """Every command of the ```bash blocks of `document`, `&&` chains split apart."""
  found, block, pending, start = [], False, "", 0
  for number, line in enumerate((REPO / document).read_text().splitlines(), 1):
    if line.startswith("```"):
      block = line.strip() == "```bash"
      continue
    if not block:
      continue
    if not pending:
      start = number
    pending += line.rstrip()
    if pending.endswith("\\"):
      pending = pending[:-1] + " "
      continue
    text, pending = pending.strip(), ""
    argv = shlex.split(text, comments=True)
    part: list[str] = []
    for word in argv + ["&&"]:
      if word != "&&":
        part.append(word)
      elif part:
        found.append(Command(document, start, text, tuple(part)))
        part = []
  return found


def all_commands() -> list[Command]:
  return [c for document in DOCUMENTS for c in commands(document)]


def align_jax_args(command: Command) -> list[str] | None:
  """The arguments `command` gives `python -m align_jax.main`, or None."""
  argv = list(command.argv)
  if argv[:3] == ENTRY:
    return argv[3:]
  if argv and argv[0] == "launch/tpu/run.sh" and "--" in argv:
    return argv[argv.index("--") + 1:]
  for i, word in enumerate(argv):
    if word == "launch/gpu/multinode.sh" and argv[0] == "sbatch":
      return argv[i + 1:]
  return None


def gin_files(args: list[str]) -> list[str]:
  return [a.split("=", 1)[1] for a in args if a.startswith("--gin_file=")]


def readme_command(gin_file: str) -> list[str]:
  """The align_jax arguments of the one documented command whose gin files are exactly
  [`gin_file`] (a demo's command)."""
  matches = [args for c in all_commands() if (args := align_jax_args(c)) is not None
             and gin_files(args) == [gin_file]]
  if len(matches) != 1:
    raise AssertionError(f"expected one documented command running only {gin_file}, found "
                         f"{len(matches)}")
  return matches[0]


def gin_value(args: list[str], key: str) -> str | None:
  """The value a `--gin.KEY=VALUE` flag of `args` sets (the last one), unquoted."""
  value = None
  for a in args:
    if a.startswith(f"--gin.{key}="):
      value = a.split("=", 1)[1]
  return re.sub(r"^'(.*)'$", r"\1", value) if value is not None else None


def readme_pod_command() -> list[str]:
  """The one documented `python -m align_jax.parallel.local_pod` command, its arguments
  after the module (tests/parallel/test_pod.py runs it)."""
  matches = [list(c.argv[3:]) for c in all_commands() if c.argv[:3] == POD]
  if len(matches) != 1:
    raise AssertionError(f"expected one documented local pod command, found {len(matches)}")
  return matches[0]
