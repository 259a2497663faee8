"""The `run` configurable: the WORKDIR, the record of the run beside it, then the job.

A WORKDIR is the record of one run: its checkpoints, metrics and configs must keep
describing each other. Each start stores a fingerprint of what is trained in
WORKDIR/run_record.json: every resolved gin binding (`gin.config_str()`) except the
ones listed in IGNORED_KEYS, which change how or how long a run trains but not what it
trains, plus the content of every file those bindings name (training data, prompts, a
vocabulary file; folders such as a Hugging Face model or an `init_from` run are not
read). Once the WORKDIR holds a checkpoint, a rerun there whose fingerprint differs
stops before any work, naming the bindings and files that differ, unless
`run.allow_config_change = True`: then the run continues and the change is appended to
WORKDIR/config_changes.jsonl. Before the first checkpoint nothing has been trained with
the recorded config, so a rerun just records its own; jobs that do not train (generate,
export) keep their own checks on what they write.

Extending a run is a normal resume: the number of steps (`STEPS`,
`LoopConfig.total_steps`) is not part of the fingerprint. Bindings that read `%STEPS`
(such as `OptimizerConfig.total_steps`, the length of the learning-rate schedule) are
compared as written, so they follow the new number of steps.

WORKDIR/config.gin holds the resolved config of the latest start that passed the
check; an earlier config.gin that differs is kept as config.1.gin, config.2.gin, ...
(in the order of the runs, the highest number the most recent of them).

WORKDIR may be a local folder or a URL (gs://bucket/run, file:///abs/run): a URL is kept
as given and written through `align_jax.fs`. It must be a place orbax can write
checkpoints to (see `checkpoint_location`); any other scheme stops the run before
anything is written.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import logging
import re
from typing import Any, Callable

import gin
import jax

from align_jax import fs
from align_jax.training.checkpoints import checkpoint_location

RECORD_FILE = "run_record.json"
CHANGES_FILE = "config_changes.jsonl"

# Bindings that do not change what is trained: the run's length and location,
# logging, checkpoint and evaluation cadence, and how the work is laid out on devices
# and in memory. A key matches by its last `Name.parameter` (any gin scope), a macro
# by its name, and `Name.*` matches every parameter of `Name`.
IGNORED_KEYS = frozenset({
    "WORKDIR", "STEPS", "run.workdir", "run.allow_config_change",
    "LoopConfig.total_steps", "LoopConfig.progress_bar", "LoopConfig.log_every",
    "LoopConfig.checkpoint_every", "LoopConfig.keep_checkpoints",
    "LoopConfig.async_checkpoints", "LoopConfig.eval_every",
    "create_mesh.*", "host_memory.*",
    "TransformerConfig.scan_layers", "TransformerConfig.remat_policy",
    "TransformerConfig.attention_block", "TransformerConfig.attention_impl",
    "*.num_micro_batches",
})

# Files up to this size are hashed whole (SHA-256, about 0.5 s per 256 MiB); larger
# ones by their size and SAMPLE_BYTES from their start, middle and end, so that a
# rerun on a big corpus does not read all of it. Modification times are not used: a
# copied or touched file with the same content is the same data.
FULL_HASH_LIMIT = 256 << 20
SAMPLE_BYTES = 4 << 20


def parse_config(text: str) -> dict[str, str]:
  """The bindings of a `gin.config_str()`: key -> value text (whitespace collapsed)."""
  bindings: dict[str, list[str]] = {}
  key = None
  for line in text.splitlines():
    if not line.strip() or line.startswith("#"):
      continue
    match = re.match(r"([A-Za-z_][\w.:/]*) = (.*)$", line)
    if match:
      key = match.group(1)
      bindings[key] = [match.group(2)]
    elif key is not None:  # a value printed over several lines
      bindings[key].append(line)
  # gin breaks a long value after `KEY = \`; the break is not part of the value.
  return {k: " ".join(" ".join(l.rstrip().removesuffix("\\") for l in lines).split())
          for k, lines in bindings.items()}


def is_ignored(key: str) -> bool:
  """Whether a binding is left out of the fingerprint (see IGNORED_KEYS)."""
  name = key.rsplit("/", 1)[-1]
  parts = name.split(".")
  short = ".".join(parts[-2:])
  candidates = {name, short}
  if len(parts) >= 2:
    candidates |= {f"{parts[-2]}.*", f"*.{parts[-1]}"}
  return bool(candidates & IGNORED_KEYS)


def _strings(value: Any) -> list[str]:
  if isinstance(value, str):
    return [value]
  if isinstance(value, (list, tuple, set)):
    return [s for v in value for s in _strings(v)]
  if isinstance(value, dict):
    return [s for v in value.values() for s in _strings(v)]
  return []


def file_fingerprint(path: str) -> dict[str, Any]:
  """{'size', 'sha256'} of a file; 'sampled_sha256' instead for one over FULL_HASH_LIMIT."""
  size = fs.getsize(path)
  digest = hashlib.sha256()
  with fs.open(path, "rb") as f:
    if size <= FULL_HASH_LIMIT:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
      return {"size": size, "sha256": digest.hexdigest()}
    for offset in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
      f.seek(offset)
      digest.update(f.read(SAMPLE_BYTES))
  return {"size": size, "sampled_sha256": digest.hexdigest()}


def run_fingerprint(config_text: str) -> dict[str, Any]:
  """What a run trains: its compared bindings, the files they name, and one hash of both."""
  config = {k: v for k, v in parse_config(config_text).items() if not is_ignored(k)}
  files: dict[str, dict[str, Any]] = {}
  for key, value in sorted(config.items()):
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      continue  # a reference (@name, %MACRO) or a constant, not a literal
    for name in _strings(parsed):
      path = fs.resolve(name) if name else name
      if name and _is_file(path):
        entry = files.setdefault(name, {"keys": [], **file_fingerprint(path)})
        entry["keys"].append(key)
  canonical = json.dumps({"config": config, "files": {p: {k: v for k, v in f.items()
                                                          if k != "keys"}
                                                      for p, f in files.items()}},
                         sort_keys=True)
  return {"fingerprint": hashlib.sha256(canonical.encode()).hexdigest(), "config": config,
          "files": files}


def _is_file(path: str) -> bool:
  """Whether `path` names a file (False for a URL no file system here serves)."""
  try:
    return fs.isfile(path)
  except (ValueError, OSError):
    return False


def _digest(entry: dict[str, Any] | None) -> str:
  if entry is None:
    return "missing"
  kind = "sha256" if "sha256" in entry else "sampled_sha256"
  return f"{entry['size']} bytes, {kind} {entry[kind][:12]}"


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[dict[str, str]]:
  """The bindings and files that differ: [{'key', 'run', 'now'}], bindings first."""
  changes = []
  before, after = recorded.get("config", {}), current["config"]
  for key in sorted(set(before) | set(after)):
    if before.get(key) != after.get(key):
      changes.append({"key": key, "run": before.get(key, "unset"), "now": after.get(key, "unset")})
  before_files, after_files = recorded.get("files", {}), current["files"]
  for path in sorted(before_files):
    old, new = before_files[path], after_files.get(path)
    if new is None and not any(before.get(k) == after.get(k) for k in old.get("keys", ())):
      continue  # no longer named: the binding that named it is reported above
    if new is None or {k: v for k, v in old.items() if k != "keys"} != {
        k: v for k, v in new.items() if k != "keys"}:
      keys = ", ".join(old.get("keys", ()))
      changes.append({"key": f"file {path} ({keys})", "run": _digest(old), "now": _digest(new)})
  for path in sorted(set(after_files) - set(before_files)):
    keys = after_files[path]["keys"]
    if any(before.get(k) == after.get(k) for k in keys):  # the same binding, a file now
      changes.append({"key": f"file {path} ({', '.join(keys)})", "run": "missing",
                      "now": _digest(after_files[path])})
  return changes


def keep_previous_config(workdir: str, text: str) -> None:
  """Writes WORKDIR/config.gin; an earlier one that differs becomes config.N.gin."""
  path = fs.join(workdir, "config.gin")
  if fs.exists(path) and fs.read_text(path) != text:
    numbers = [int(m.group(1)) for name in fs.listdir(workdir)
               if (m := re.fullmatch(r"config\.(\d+)\.gin", name))]
    fs.replace(path, fs.join(workdir, f"config.{max(numbers, default=0) + 1}.gin"))
  fs.write_atomically(path, text)


def check_run_record(workdir: str, config_text: str, allow_config_change: bool = False
                     ) -> dict[str, Any]:
  """Compares this start with the record of the run in WORKDIR, if it has trained (holds a
  checkpoint), and returns the new record.

  Raises ValueError naming what differs, unless `allow_config_change`; then the
  change is appended to WORKDIR/config_changes.jsonl (by process 0).
  """
  current = run_fingerprint(config_text)
  path = fs.join(workdir, RECORD_FILE)
  checkpoints = fs.join(workdir, "checkpoints")
  if not fs.exists(path) or not (fs.isdir(checkpoints) and any(
      name.isdigit() for name in fs.listdir(checkpoints))):
    return current
  recorded = json.loads(fs.read_text(path))
  if recorded.get("fingerprint") == current["fingerprint"]:
    return current
  changes = differences(recorded, current)
  if not changes:
    return current
  listing = "\n  ".join(f"{c['key']}: {c['run']} in the run, {c['now']} now" for c in changes)
  if not allow_config_change:
    raise ValueError(
        f"WORKDIR {workdir} holds a run trained with another config or data:\n  {listing}\n"
        f"Use a new WORKDIR, or pass --gin.run.allow_config_change=True to continue this run "
        f"with the new settings (the change is recorded in {fs.join(workdir, CHANGES_FILE)})")
  if jax.process_index() == 0:
    entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "previous_fingerprint": recorded.get("fingerprint"),
             "fingerprint": current["fingerprint"], "changes": changes}
    with fs.open(fs.join(workdir, CHANGES_FILE), "a") as f:
      f.write(json.dumps(entry) + "\n")
  logging.warning("continuing %s with a changed config:\n  %s", workdir, listing)
  print(f"[align_jax] continuing WORKDIR with a changed config (run.allow_config_change=True); "
        f"recorded in {fs.join(workdir, CHANGES_FILE)}:\n  {listing}", flush=True)
  return current


def run(job: Callable[..., object] = gin.REQUIRED, workdir: str = gin.REQUIRED,
        allow_config_change: bool = False) -> object:
  """Runs `job(workdir=...)` after checking and storing the record of the run in `workdir`.

  allow_config_change: continue a run whose recorded config or data differ from this
    start's (recorded in WORKDIR/config_changes.jsonl) instead of stopping.
  """
  workdir = fs.resolve(workdir)  # a URL (gs://...) is kept as given
  checkpoint_location(workdir, "WORKDIR")  # before anything is written
  fs.makedirs(workdir)
  config_text = gin.config_str()
  record = check_run_record(workdir, config_text, allow_config_change)
  if jax.process_index() == 0:
    keep_previous_config(workdir, config_text)
    fs.write_atomically(fs.join(workdir, RECORD_FILE),
                        json.dumps(record, indent=1, sort_keys=True) + "\n")
  logging.info("WORKDIR: %s", workdir)
  print(f"[align_jax] WORKDIR {workdir}", flush=True)
  result = job(workdir=workdir)
  if jax.process_index() == 0:
    fs.write_atomically(fs.join(workdir, "operative_config.gin"), gin.operative_config_str())
  print(f"[align_jax] done; outputs in {workdir}", flush=True)
  return result
