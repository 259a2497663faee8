"""Entry point: `python -m align_jax.main --gin_file=... [--gin.KEY=VALUE ...]`.

gin files are parsed in order (later bindings win), then `--gin_bindings` and
`--gin.KEY=VALUE` overrides. The configurable `run` names the job and the WORKDIR;
the full resolved config is written to `WORKDIR/config.gin` before the job starts,
and the operative config (what the job actually read) to
`WORKDIR/operative_config.gin` when it ends. Unset `%gin.REQUIRED` values, unknown
configurables, misspelt parameters, unquoted strings and `--gin.MACRO` flags that no
gin file defines or uses fail before any work starts.

Errors. A configuration mistake prints `align_jax: error: <message>` (and at times an
`align_jax: hint: ...` line) to stderr and exits with status 2, whoever calls `main`.
During the job, `main()` as the command line (`python -m align_jax.main`, the
`align_jax` console script: no argv given) reports a user error the same way: a
ValueError (bad data, shapes, meshes, checkpoints; `JsonlError` among them) or a file
that is missing, already exists, or is a folder where a file belongs. Any other exception
is a fault of the program and keeps its traceback. `--traceback` (or
`ALIGN_JAX_TRACEBACK=1`) shows the traceback of every error. Called from Python with
argv (`main([...])`, `run_main`), the job's errors are raised to the caller.

On a host where JAX can only use the CPU, JAX and TensorFlow are kept from looking for
GPUs and TPUs, whose failed probes print CUDA, cuInit and TPU messages.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.util
import logging
import os
import pkgutil
import re
import sys
import tokenize
from pathlib import Path
from typing import Iterator, Sequence

import gin
from gin import config_parser

from align_jax.parallel.host import DEFAULT_COMPILATION_CACHE, enable_compilation_cache

PACKAGE_DIR = Path(__file__).resolve().parent

# What a user can fix, once the job runs: reported in one line from the command line.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError)

# A `--gin.KEY=VALUE` value that starts like a literal, a reference or a macro is not
# taken for an unquoted string.
_LITERAL_START = re.compile(r"[\"'(\[{@%0-9.+-]")


def gin_dirs() -> list[Path]:
  """The shipped gin folder: inside the installed package, or the source checkout's."""
  return [p for p in (PACKAGE_DIR / "gin", PACKAGE_DIR.parent / "gin") if p.is_dir()]


def available_gin_files() -> list[str]:
  """The shipped gin files, as paths relative to their gin folder, sorted."""
  files: set[str] = set()
  for root in gin_dirs():
    files.update(str(p.relative_to(root)) for p in root.rglob("*.gin"))
  return sorted(files)


_USAGE = ("python -m align_jax.main --gin_file=FILE [--gin_file=FILE ...] "
          "[--gin.KEY=VALUE ...] [options]")

_DESCRIPTION = """\
Run an align_jax job configured by gin files.

Override a gin binding or macro with --gin.KEY=VALUE, e.g. --gin.STEPS=100 or
--gin.TransformerConfig.d_model=128. VALUE is a gin (Python) value, so a string is
quoted inside the shell's quotes: --gin.WORKDIR="'runs/x'".

A mistake in the configuration or the data prints one line (align_jax: error: ...) and
exits with status 2; --traceback (or ALIGN_JAX_TRACEBACK=1) shows the full traceback."""


def _help_epilog() -> str:
  groups: dict[str, list[str]] = {}
  for name in available_gin_files():
    groups.setdefault(name.split("/")[0] if "/" in name else "top level", []).append(name)
  lines = ["available gin files (pass as --gin_file=gin/NAME or NAME):"]
  for group in sorted(groups):
    lines.append(f"  {group}: " + ", ".join(groups[group]))
  return "\n".join(lines)


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
  """Parses flags; each `--gin.KEY=VALUE` becomes `(KEY, VALUE)` in `gin_overrides`."""
  parser = argparse.ArgumentParser(
      prog="python -m align_jax.main", usage=_USAGE, description=_DESCRIPTION,
      epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file to parse (repeatable; later files override earlier ones)")
  parser.add_argument("--gin_search_paths", action="append", default=[],
                      help="comma-separated folders searched for gin files and includes "
                           "(the package's gin folder is always searched)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding such as 'run.workdir=\"/tmp/x\"' (repeatable)")
  parser.add_argument("--log_level", default="INFO", help="Python logging level")
  parser.add_argument("--compilation_cache",
                      default=os.environ.get("ALIGN_JAX_COMPILATION_CACHE",
                                             DEFAULT_COMPILATION_CACHE),
                      help="folder (or gs:// URL) where compiled XLA programs are kept for "
                           "later runs and stages; 'off' disables it (also "
                           "ALIGN_JAX_COMPILATION_CACHE)")
  parser.add_argument("--traceback", action="store_true",
                      default=os.environ.get("ALIGN_JAX_TRACEBACK", "") not in ("", "0"),
                      help="show the full traceback of an error instead of one line "
                           "(also ALIGN_JAX_TRACEBACK=1)")
  gin_overrides = []
  rest = []
  for arg in argv:
    match = re.fullmatch(r"--gin\.([^=]+)=(.*)", arg, flags=re.S)
    if match:
      gin_overrides.append((match.group(1), match.group(2)))
    elif arg.startswith("--gin.") and "=" not in arg:
      parser.error(f"{arg}: expected --gin.KEY=VALUE")
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  args.gin_overrides = gin_overrides
  if not args.gin_file:
    parser.error("at least one --gin_file is required (e.g. --gin_file=gin/quickstart.gin)")
  return args


def _hinted(error: BaseException, hint: str) -> BaseException:
  """The error, carrying a hint that `report_error` prints on a line of its own."""
  error.add_note(f"hint: {hint}")
  return error


def _searched(search_paths: Sequence[str]) -> str:
  folders = dict.fromkeys(str(p) for p in list(map(Path, search_paths)) + gin_dirs())
  return ", ".join(["the current folder", *folders])


def _resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
  candidates = [Path(name)]
  for root in list(map(Path, search_paths)) + gin_dirs():
    candidates.append(root / name)
    if name.startswith("gin/"):
      candidates.append(root / name[len("gin/"):])
  for path in candidates:
    if path.is_file():
      return str(path)
  close = difflib.get_close_matches(name.removeprefix("gin/"), available_gin_files(), n=1,
                                    cutoff=0.8)
  raise _hinted(
      FileNotFoundError(f"gin file {name!r} not found (looked in {_searched(search_paths)})"),
      (f"did you mean gin/{close[0]}? " if close else "") + "give the file's path, or add "
      "the folder that holds it with --gin_search_paths=FOLDER; the shipped gin files: "
      + ", ".join(available_gin_files()))


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


def _macros(texts: Sequence[str]) -> tuple[set[str], set[str]]:
  """The macros that gin texts define (`NAME = ...` at a line's start) and use (`%NAME`)."""
  defined: set[str] = set()
  used: set[str] = set()
  for text in texts:
    for line in text.splitlines():
      line = line.split("#", 1)[0]
      match = re.match(r"\s*(?:[\w.]+/)*([A-Za-z_]\w*)\s*=", line)
      if match:
        defined.add(match.group(1))
      used.update(name.rsplit("/", 1)[-1] for name in re.findall(r"%([\w/]+)(?![\w.])", line))
  return defined, used


def _first_use(macro: str, files: Sequence[str]) -> str | None:
  """Where a gin file first reads `%macro`: "FILE, line N: TEXT"."""
  for path in files:
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
      if re.search(rf"%(?:[\w.]+/)*{re.escape(macro)}(?![\w.])", line.split("#", 1)[0]):
        return f"{path}, line {number}: {line.strip()}"
  return None


def check_overrides(overrides: Sequence[tuple[str, str]], files: Sequence[str],
                    bindings: Sequence[str] = ()) -> None:
  """Refuses a `--gin.KEY=VALUE` flag whose VALUE is no gin value (most often a string left
  unquoted) or whose KEY is a macro that none of the gin files (includes too) nor the other
  bindings define or use: gin would ignore such a macro, and the run would go on without it.

  Raises ValueError naming the flag.
  """
  for key, value in overrides:
    try:
      list(config_parser.ConfigParser(f"value = {value}", gin.config.ParserDelegate(True)))
    except (SyntaxError, tokenize.TokenError) as e:
      if _LITERAL_START.match(value.strip()):
        raise ValueError(f"--gin.{key}={value}: not a gin value "
                         f"({one_line(str(e) if isinstance(e, SyntaxError) else e.args[0])})"
                         ) from None
      quoted = f"'{value}'" if "'" not in value else f'"{value}"'
      raise ValueError(f"--gin.{key}={value}: a string value must be quoted, "
                       f"e.g. --gin.{key}=\"{quoted}\"") from None
  defined, used = _macros([Path(path).read_text() for path in files])
  used |= _macros(bindings)[1]
  for key, _ in overrides:
    if "." in key or "/" in key or key in defined | used:
      continue
    known = {name.upper(): name for name in sorted(defined | used)}
    close = difflib.get_close_matches(key.upper(), known, n=1)
    raise ValueError(f"--gin.{key}: no gin file defines or uses the macro {key}"
                     + (f"; did you mean {known[close[0]]}?" if close else ""))


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


def _unbound_error(message: str, files: Sequence[str]) -> ValueError:
  """gin's "No bindings specified for 'X'" without the config dump that follows it; for an
  undefined macro, where it is read and which shipped gin files define it."""
  message = message.split(" in config string:", 1)[0]
  match = re.match(r"No bindings specified for '(?:[\w.]+/)*([\w.]+)/gin\.macro'", message)
  if not match:
    return ValueError(message)
  macro = match.group(1)
  use = _first_use(macro, files)
  error = ValueError(f"the macro {macro} is read" + (f" ({use})" if use else "")
                     + " but no gin file or flag defines it")
  definers = sorted({str(path.relative_to(root)) for root in gin_dirs()
                     for path in root.rglob("*.gin") if macro in _macros([path.read_text()])[0]})
  if definers:
    # The folder that most of them share first (e.g. models/ for MODEL_CONFIG).
    folders = [Path(name).parent for name in definers]
    definers.sort(key=lambda name: -folders.count(Path(name).parent))
    return _hinted(error, "add one of the shipped gin files that define it before the "
                          f"others (--gin_file=gin/NAME): {', '.join(definers)}")
  return _hinted(error, f"define it in a gin file or with --gin.{macro}=VALUE")


def _missing_include(name: str, includer: str | None, line: int,
                     search_paths: Sequence[str]) -> FileNotFoundError:
  """A FileNotFoundError for an include gin cannot open, naming the including file and the
  --gin_search_paths that finds it."""
  by = f" (included by {includer}, line {line})" if includer else ""
  missing = FileNotFoundError(f"gin file {name!r}{by} not found (looked in "
                              f"{_searched(search_paths)})")
  if includer:
    for folder in Path(includer).resolve().parents:
      if (folder / name).is_file():
        return _hinted(missing, f"it is in {folder}: add --gin_search_paths={folder}")
  close = difflib.get_close_matches(name, available_gin_files(), n=1, cutoff=0.8)
  return _hinted(missing, (f"did you mean {close[0]!r}? " if close else "")
                 + "add the folder that holds it with --gin_search_paths=FOLDER")


def _check_includes(files: Sequence[str], search_paths: Sequence[str]) -> None:
  """Raises FileNotFoundError (see `_missing_include`) for the first include in the gin
  files that gin's own lookup (its search paths, then its file readers) cannot open."""
  from gin import config as gin_config
  for path in files:
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
      match = re.match(r"\s*include\s+['\"](.+)['\"]", line)
      if not match:
        continue
      name = match.group(1)
      prefixes = [""] if os.path.isabs(name) else gin_config._LOCATION_PREFIXES  # noqa: SLF001
      if not any(exists(os.path.join(prefix, name)) for prefix in prefixes
                 for _, exists in gin_config._FILE_READERS):  # noqa: SLF001
        raise _missing_include(name, path, number, search_paths)


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


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
  """Sends what is written to file descriptor 2 (native libraries' logs too) to /dev/null."""
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:
    yield
    return
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def quiet_cpu_host() -> bool:
  """On a host where JAX can only use the CPU (`align_jax.parallel.host.cpu_only`), keeps JAX
  and TensorFlow from looking for GPUs and TPUs, whose failed probes print CUDA, cuInit and
  TPU messages: sets JAX_PLATFORMS=cpu and TF_CPP_MIN_LOG_LEVEL=3 unless they are set.
  Call it before TensorFlow is imported. Returns whether JAX can only use the CPU."""
  from align_jax.parallel.host import cpu_only
  if not cpu_only():
    return False
  if not os.environ.get("JAX_PLATFORMS"):
    import jax
    os.environ["JAX_PLATFORMS"] = "cpu"
    if not jax.config.jax_platforms:
      jax.config.update("jax_platforms", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  return True


def _import_tensorflow() -> None:
  """Imports TensorFlow (seqio's data pipeline) before anything else does. Its native
  libraries log while they load, before they read TF_CPP_MIN_LOG_LEVEL: when that variable
  hides their INFO messages, so does this import. On a CPU-only host TensorFlow gets no GPU
  (it would probe CUDA for one)."""
  if "tensorflow" in sys.modules:
    return
  level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
  quiet = level.isdigit() and int(level) >= 1
  with _native_stderr_muted() if quiet else contextlib.nullcontext():
    import tensorflow as tf
    from align_jax.parallel.host import cpu_only
    if cpu_only():
      tf.config.set_visible_devices([], "GPU")


class _HideLibraryNoise(logging.Filter):
  """Drops log records that concern the libraries and not the user: seqio's advice against
  uncached tasks (align_jax's tasks are built from files on the fly by design) and gin's
  probes of the places an include might be (a missing include is reported as an error)."""

  _GIN_PROBES = ("system_path_file_exists:%s", "Path not found: %s")

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name == "absl" and str(record.msg).startswith(
        "Using an uncached FunctionDataset for training"):
      return False
    return not (record.msg in self._GIN_PROBES
                and record.pathname.endswith(os.path.join("gin", "resource_reader.py")))


_HIDE_LIBRARY_NOISE = _HideLibraryNoise()


def register_configurables() -> None:
  """Registers what gin may bind: the core's names (`align_jax.configurables`), the
  jobs' and each method's own (`align_jax.methods.<name>.configurables`)."""
  _import_tensorflow()
  importlib.import_module("align_jax.jobs.configurables")
  from align_jax import methods
  for info in pkgutil.iter_modules(methods.__path__):
    if info.ispkg and importlib.util.find_spec(
        f"align_jax.methods.{info.name}.configurables") is not None:
      importlib.import_module(f"align_jax.methods.{info.name}.configurables")


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = (),
              overrides: Sequence[tuple[str, str]] = ()) -> list[str]:
  """Resolves the gin files and checks their includes and the `--gin.KEY=VALUE` overrides
  (see `check_overrides`) before the library is imported, then registers the
  configurables, parses files, then bindings, then overrides, and validates.

  Returns the resolved file paths. Raises ValueError naming the file/line (or
  flag) for unknown configurables, misspelt parameters, unset REQUIRED values, undefined
  macros and gin syntax, and FileNotFoundError for a missing gin file or include.
  """
  paths = [p for group in search_paths for p in group.split(",") if p]
  files = [_resolve_gin_file(name, paths) for name in gin_files]
  _tolerate_namespace_packages_in_gin_includes()
  for root in paths + [str(p) for p in gin_dirs()]:
    gin.add_config_file_search_path(root)
  all_files = _with_includes(files, paths)
  _check_includes(all_files, paths)
  bindings = list(bindings) + [f"{key} = {value}" for key, value in overrides]
  check_overrides(overrides, all_files, bindings)

  register_configurables()
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except SyntaxError as e:
    raise ValueError(str(e)) from e
  except OSError as e:
    missing = re.search(r"Unable to open file: (.+?)\. Searched config paths", str(e))
    if not missing:
      raise
    where = re.search(r'In file "(.+?)", line (\d+)', str(e))
    raise _missing_include(missing.group(1), where and where.group(1),
                           int(where.group(2)) if where else 0, paths) from None
  try:
    gin.finalize()
  except ValueError as e:
    if str(e).startswith("No bindings specified for"):
      raise _unbound_error(str(e), all_files) from None
    raise ValueError(_required_origin(str(e), all_files)) from None
  return files


def one_line(message: str) -> str:
  """An error message on one line: gin's "In call to configurable" trail dropped, a location
  line ("In file ..., line N") joined to the gin text it quotes by ": ", the lines of a
  listing by "; "."""
  text = ""
  for line in message.splitlines():
    line = line.strip()
    if not line or line.startswith("In call to configurable"):
      continue
    if re.search(r'In (file ".*", line|bindings string line) \d+$', text):
      text += f": {line}"
    elif text:
      text += (" " if text[-1] in ".,:;!?" else "; ") + line
    else:
      text = line
  return text


def _raised_outside_align_jax(error: BaseException) -> str | None:
  """The module that raised the error when it is not align_jax's own code."""
  tb = error.__traceback__
  if tb is None:
    return None
  while tb.tb_next is not None:
    tb = tb.tb_next
  path = Path(tb.tb_frame.f_code.co_filename)
  if PACKAGE_DIR in path.parents:
    return None
  return tb.tb_frame.f_globals.get("__name__") or str(path)


def report_error(error: BaseException, *, during_job: bool = False) -> None:
  """Prints a user error as `align_jax: error: <message>` (the message of the error itself,
  else of its cause), then its hints as `align_jax: hint: ...` lines, to stderr. During the
  job, an error that a library raised gets a hint to rerun with --traceback."""
  message = ""
  cause: BaseException | None = error
  while cause is not None and not message:
    message = one_line(str(cause))
    cause = cause.__cause__
  lines = [f"align_jax: error: {message or type(error).__name__}"]
  lines += [f"align_jax: {note}" for note in getattr(error, "__notes__", ())
            if note.startswith("hint: ")]
  origin = _raised_outside_align_jax(error) if during_job else None
  if origin:
    lines.append(f"align_jax: hint: {type(error).__name__} from {origin}; rerun with "
                 "--traceback to see where")
  print("\n".join(lines), file=sys.stderr)


def _run(args: argparse.Namespace) -> object:
  logging.basicConfig(level=args.log_level.upper(),
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  if args.log_level.upper() != "DEBUG":
    # orbax and TensorFlow log every checkpoint operation through absl at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
  for logger in (logging.getLogger(), logging.getLogger("absl")):
    logger.addFilter(_HIDE_LIBRARY_NOISE)
  quiet_cpu_host()
  gin.clear_config()
  try:
    parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths, args.gin_overrides)
  except (ValueError, FileNotFoundError) as e:
    # A configuration mistake: one clear message, before any work starts.
    if args.traceback:
      raise
    report_error(e)
    raise SystemExit(2) from None
  from align_jax.parallel import initialize_distributed
  # Before JAX's first computation: malloc binds threads to arenas as they start.
  gin.get_configurable("host_memory")()
  enable_compilation_cache(args.compilation_cache)
  initialize_distributed()
  return gin.get_configurable("run")()


def run_main(argv: Sequence[str]) -> object:
  """Runs the job that the flags and gin files configure and returns its result. A
  configuration error exits with status 2; the job's errors are raised."""
  return _run(parse_flags(argv))


def main(argv: Sequence[str] | None = None) -> object:
  """The command line (argv None: `sys.argv`): `run_main`, with a user error of the job
  (`USER_ERRORS`) reported in one line and exit status 2 unless --traceback is given.
  Called with argv, it is `run_main(argv)`: the job's errors are raised."""
  if argv is not None:
    return run_main(argv)
  args = parse_flags(sys.argv[1:])
  try:
    return _run(args)
  except USER_ERRORS as e:
    if args.traceback:
      raise
    report_error(e, during_job=True)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
