"""Entry point: `python -m align_jax.main --gin_file=... [--gin.KEY=VALUE ...]`.

gin files are parsed in order (later bindings win), then `--gin_bindings` and
`--gin.KEY=VALUE` overrides. The configurable `run` names the job and the WORKDIR;
the full resolved config is written to `WORKDIR/config.gin` before the job starts,
and the operative config (what the job actually read) to
`WORKDIR/operative_config.gin` when it ends. Unset `%gin.REQUIRED` values, unknown
configurables and misspelt parameters fail before any work starts.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pkgutil
import re
import sys
from pathlib import Path
from typing import Sequence

import gin

PACKAGE_DIR = Path(__file__).resolve().parent


def gin_dirs() -> list[Path]:
  """The shipped gin folder: inside the installed package, or the source checkout's."""
  return [p for p in (PACKAGE_DIR / "gin", PACKAGE_DIR.parent / "gin") if p.is_dir()]


def available_gin_files() -> list[str]:
  """The shipped gin files, as paths relative to their gin folder, sorted."""
  files: set[str] = set()
  for root in gin_dirs():
    files.update(str(p.relative_to(root)) for p in root.rglob("*.gin"))
  return sorted(files)


def _help_epilog() -> str:
  groups: dict[str, list[str]] = {}
  for name in available_gin_files():
    groups.setdefault(name.split("/")[0] if "/" in name else "top level", []).append(name)
  lines = ["available gin files (pass as --gin_file=gin/NAME or NAME):"]
  for group in sorted(groups):
    lines.append(f"  {group}: " + ", ".join(groups[group]))
  return "\n".join(lines)


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
  """Parses flags; `--gin.KEY=VALUE` becomes a gin binding `KEY = VALUE`."""
  parser = argparse.ArgumentParser(
      prog="python -m align_jax.main",
      description="Run an align_jax job configured by gin files.",
      epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file to parse (repeatable; later files override earlier ones)")
  parser.add_argument("--gin_search_paths", action="append", default=[],
                      help="comma-separated folders searched for gin files and includes "
                           "(the package's gin folder is always searched)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding such as 'run.workdir=\"/tmp/x\"' (repeatable)")
  parser.add_argument("--log_level", default="INFO", help="Python logging level")
  gin_overrides = []
  rest = []
  for arg in argv:
    match = re.fullmatch(r"--gin\.([^=]+)=(.*)", arg, flags=re.S)
    if match:
      gin_overrides.append(f"{match.group(1)} = {match.group(2)}")
    elif arg.startswith("--gin.") and "=" not in arg:
      parser.error(f"{arg}: expected --gin.KEY=VALUE")
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  args.gin_bindings = list(args.gin_bindings) + gin_overrides
  if not args.gin_file:
    parser.error("at least one --gin_file is required (e.g. --gin_file=gin/quickstart.gin)")
  return args


def _resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
  candidates = [Path(name)]
  for root in list(map(Path, search_paths)) + gin_dirs():
    candidates.append(root / name)
    if name.startswith("gin/"):
      candidates.append(root / name[len("gin/"):])
  for path in candidates:
    if path.is_file():
      return str(path)
  raise FileNotFoundError(
      f"gin file {name!r} not found (looked in the current folder and "
      f"{[str(p) for p in list(map(Path, search_paths)) + gin_dirs()]}); "
      f"available: {', '.join(available_gin_files())}")


def _with_includes(files: Sequence[str], search_paths: Sequence[str]) -> list[str]:
  """The given gin files followed by everything they include, recursively."""
  seen: list[str] = []
  pending = list(files)
  while pending:
    path = pending.pop(0)
    if path in seen:
      continue
    seen.append(path)
    for line in Path(path).read_text().splitlines():
      match = re.match(r"\s*include\s+['\"](.+)['\"]", line)
      if match:
        try:
          pending.append(_resolve_gin_file(match.group(1), [str(Path(path).parent), *search_paths]))
        except FileNotFoundError:
          pass  # gin itself reports unreadable includes while parsing
  return seen


def _required_origin(message: str, files: Sequence[str]) -> str:
  """Names the file and line that declared the unset `%gin.REQUIRED` value."""
  match = re.match(r"(\S+?)(?:/macro\.value|) set to", message)
  if not match:
    return message
  key = match.group(1)
  for path in files:
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
      if re.match(rf"\s*{re.escape(key)}\s*=\s*%gin\.REQUIRED", line):
        return (f"{key} is %gin.REQUIRED (declared in {path}, line {number}) but no gin file or "
                f"flag sets it; add e.g. --gin.{key}=... ({message})")
  return f"{key} is %gin.REQUIRED but nothing sets it ({message})"


def _tolerate_namespace_packages_in_gin_includes() -> None:
  """gin treats `include 'models/x.gin'` as a lookup of a Python package `models` too;
  when a namespace package of that name is importable (e.g. a `models/` folder in the
  current directory) its lookup raises TypeError instead of reporting "not found".
  Make that lookup report "not found", so the search paths are used."""
  from gin import config as gin_config
  from gin import resource_reader

  def exists(path: str) -> bool:
    try:
      return resource_reader.system_path_file_exists(path)
    except TypeError:
      return False

  gin_config._FILE_READERS[:] = [  # noqa: SLF001
      (reader, exists if check is resource_reader.system_path_file_exists else check)
      for reader, check in gin_config._FILE_READERS]  # noqa: SLF001


def register_configurables() -> None:
  """Registers what gin may bind: the core's names (`align_jax.configurables`), the
  jobs' and each method's own (`align_jax.methods.<name>.configurables`)."""
  importlib.import_module("align_jax.jobs.configurables")
  from align_jax import methods
  for info in pkgutil.iter_modules(methods.__path__):
    if info.ispkg and importlib.util.find_spec(
        f"align_jax.methods.{info.name}.configurables") is not None:
      importlib.import_module(f"align_jax.methods.{info.name}.configurables")


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> list[str]:
  """Registers the configurables, parses files then bindings, and validates.

  Returns the resolved file paths. Raises ValueError naming the file/line (or
  flag) for unknown configurables, misspelt parameters and unset REQUIRED values.
  """
  register_configurables()
  _tolerate_namespace_packages_in_gin_includes()

  paths = [p for group in search_paths for p in group.split(",") if p]
  for root in paths + [str(p) for p in gin_dirs()]:
    gin.add_config_file_search_path(root)
  files = [_resolve_gin_file(name, paths) for name in gin_files]
  gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  try:
    gin.finalize()
  except ValueError as e:
    raise ValueError(_required_origin(str(e), _with_includes(files, paths))) from None
  return files


def main(argv: Sequence[str] | None = None) -> object:
  """Runs the job that the flags and gin files configure and returns its result; a
  configuration error exits with status 2."""
  args = parse_flags(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=args.log_level.upper(),
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  if args.log_level.upper() != "DEBUG":
    # orbax and TensorFlow log every checkpoint operation through absl at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
  gin.clear_config()
  try:
    parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  except (ValueError, FileNotFoundError) as e:
    # A configuration mistake: one clear message, before any work starts.
    print(f"align_jax: configuration error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  from align_jax.parallel import initialize_distributed
  # Before JAX's first computation: malloc binds threads to arenas as they start.
  gin.get_configurable("host_memory")()
  initialize_distributed()
  return gin.get_configurable("run")()


if __name__ == "__main__":
  main()
