"""Resumable, streaming generation: input records in, one jsonl row per record out.

Every method that makes data by sampling (self-instruct, preference pairs, PRM labels,
STaR, RECITE hints) goes through `generate_to_jsonl`. Records stream in `chunk_size` at
a time; each chunk is generated and appended to the output as a whole, so memory holds
one chunk, and a run that is interrupted (preemption, SIGKILL, a crash) resumes after its
last complete chunk when the same call is made again.

On disk, next to the output `path` sits the sidecar `path + ".progress.json"`:

  {"version": 1, "settings": {...}, "records_done": K, "bytes": B, "chunks_done": C,
   "rows": R, "dropped": D, "generated_tokens": T, "seconds": S, "inputs_digest": H,
   "complete": false}

* The sidecar is written before `path` is created, and afterwards only replaced
  atomically (temporary file, fsync, `os.replace`, fsync of the folder).
* A chunk's rows are appended to `path` in one write, flushed and fsynced; only then does
  the sidecar move on to the new K and B. So the first B bytes of `path` always hold
  exactly the rows of the first K input records, and bytes past B are a chunk whose write
  was cut short: a rerun truncates them away and generates that chunk again.
* When the records run out the sidecar gets `"complete": true`; a rerun then returns the
  recorded stats at once and touches nothing. Until then `path` is not a finished output.
* A `path` without a sidecar was not made here and is never touched (FileExistsError).
  A sidecar made with other settings (sampling, seed, chunk_size, number of records, the
  caller's `settings`) or from other inputs (H chains hashes of the first K records and
  their prompts) stops the run with a ValueError that names the file; nothing is changed.
* While it runs, the writer holds an exclusive `flock` on `path` (where the file system
  supports it), so a second run on the same path stops instead of interleaving chunks.
* `path` may be a URL (gs://..., through `align_jax.fs`): there each chunk is appended and
  flushed (an object store uploads the file again), an unfinished chunk is cut off by
  rewriting the file's complete part, and nothing is locked.

A row's completions depend only on the settings and the record's index: chunk c (records
c * chunk_size onwards) is sampled with the key `fold_in(key(seed), c)`, into which the
engine folds each row's index within the call; chunk_size is therefore a setting.
In a multi-host run every process generates and only process 0 writes (`is_writer()`).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import itertools
import json
import os
import time
from collections.abc import Sized
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
from tqdm import tqdm

from align_jax import fs
from align_jax.pipeline.stages import is_writer
from align_jax.sampling.engine import GenerationResult, Sampler
from align_jax.sampling.strategies import SamplingConfig

PROGRESS_SUFFIX = ".progress.json"
_VERSION = 1

MakePrompt = Callable[[Mapping[str, Any]], Any]
Postprocess = Callable[[Mapping[str, Any], list[dict[str, Any]]], Mapping[str, Any] | None]


def _sync_hosts(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------------
# Pieces shared with the generate job: prompt records in, completion records out.

def check_prompt_record(record: Mapping[str, Any]) -> str | None:
  """None when `record` holds a usable `prompt` (text) or `prompt_tokens` (ids), else
  what is wrong (a `read_jsonl` validator)."""
  if "prompt" in record:
    return None if isinstance(record["prompt"], str) else "field 'prompt' must be a string"
  if "prompt_tokens" in record:
    tokens = record["prompt_tokens"]
    if isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens):
      return None
    return "field 'prompt_tokens' must be a non-empty list of integers"
  return "missing field 'prompt' (text) or 'prompt_tokens' (token ids)"


def prompt_renderer(vocab=None, chat_template: str | None = None,
                    add_bos: bool = True) -> Callable[[Mapping[str, Any]], list[int]]:
  """A `make_prompt` for records with `prompt_tokens` (used as they are) or `prompt`.

  A text prompt is encoded by `align_jax.data.encode_prompt`, the BOS policy of training
  data and of the Sampler: a user turn of `chat_template` (e.g. 'llama3') ready for the
  assistant's reply, or, without a template, its tokens; either way after BOS (when
  `add_bos`, the vocabulary has one and the template has not put it there). A template
  whose special tokens the vocabulary lacks is refused here, before any generation.
  """
  from align_jax.data.tasks import encode_prompt
  template = None
  if chat_template:
    from align_jax.data.chat import get_template
    template = get_template(chat_template)
    if vocab is not None:
      template.check_vocabulary(vocab)

  def make_prompt(record: Mapping[str, Any]) -> list[int]:
    if "prompt_tokens" in record:
      return [int(t) for t in record["prompt_tokens"]]
    if vocab is None:
      raise ValueError("a text 'prompt' needs a vocabulary; pass vocab to prompt_renderer")
    return encode_prompt(vocab, record["prompt"], chat_template=template, add_bos=add_bos)

  return make_prompt


def completion_records(result: GenerationResult, index: int) -> list[dict[str, Any]]:
  """The samples of prompt `index` as JSON records: `text` (None without a vocabulary),
  `tokens`, `logprobs` (under the sampling distribution), `model_logprobs` (under the
  unmodified model) and `finished` (ended by EOS or a stop string, not the token limit)."""
  completions = []
  for s in range(result.tokens.shape[1]):
    length = int(result.lengths[index, s])
    completions.append({
        "text": result.texts[index][s] if result.texts is not None else None,
        "tokens": result.tokens[index, s, :length].tolist(),
        "logprobs": [round(float(x), 6) for x in result.logprobs[index, s, :length]],
        "model_logprobs": [round(float(x), 6)
                           for x in result.model_logprobs[index, s, :length]],
        "finished": bool(result.finished[index, s]),
    })
  return completions


# ----------------------------------------------------------------------------------
# The resumable generation loop.

def progress_path(path: str) -> str:
  """The sidecar that records how much of `path` is complete."""
  return path + PROGRESS_SUFFIX


def is_finished(path: str) -> bool:
  """Whether `path` is a complete output of `generate_to_jsonl`, or a file it did not make
  (either way, a file that must not be written to)."""
  if not fs.exists(path):
    return False
  state = _read_state(progress_path(path))
  return state is None or bool(state.get("complete"))


def generate_to_jsonl(path: str, records: Iterable[Mapping[str, Any]], make_prompt: MakePrompt,
                      sampler: Sampler, sampling: SamplingConfig, *, seed: int,
                      chunk_size: int = 64, postprocess: Postprocess | None = None,
                      settings: Mapping[str, Any] | None = None,
                      desc: str = "generate") -> dict[str, Any]:
  """Writes one jsonl row per input record to `path`, resuming an interrupted run.

  make_prompt(record): the prompt's token ids, or its text (needs the sampler's vocabulary).
  postprocess(record, completions): the output row, or None to drop the record (counted);
    default `{**record, "completions": completions}` (see `completion_records`).
  settings: anything else the output depends on (e.g. the checkpoint), JSON-serialisable;
    recorded and compared on resume like the sampling settings, seed and chunk_size.
  desc: the progress bar's label.

  Returns the stats of the whole output: records, rows, dropped, chunks,
  generated_tokens, seconds (spent generating, over all runs), tokens_per_second.
  Raises FileExistsError for a `path` this function did not make, and ValueError when
  `path` was made with other settings or inputs.
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  sidecar = progress_path(path)
  total = len(records) if isinstance(records, Sized) else None
  wanted = _jsonable({"sampling": dataclasses.asdict(sampling), "seed": seed,
                      "chunk_size": chunk_size, "records": total,
                      "settings": dict(settings or {})})
  state = _read_state(sidecar)
  if state is None:
    if fs.exists(path):
      raise FileExistsError(f"{path} exists but has no {PROGRESS_SUFFIX} sidecar, so it was "
                            "not written by generate_to_jsonl; refusing to touch it (choose "
                            "another path or remove the file)")
    state = {"version": _VERSION, "settings": wanted, "records_done": 0, "bytes": 0,
             "chunks_done": 0, "rows": 0, "dropped": 0, "generated_tokens": 0,
             "seconds": 0.0, "inputs_digest": "", "complete": False}
    fresh = True
  else:
    _check_settings(path, state, wanted)
    fresh = False
    if state["complete"]:
      _say(f"{path} is complete ({state['records_done']} records); nothing to generate")
      return _stats(state)

  # Skip (and check) the records already done before anything is written.
  inputs = iter(records)
  digest = _skip_done(path, inputs, make_prompt, state)
  _sync_hosts(f"generate_to_jsonl: {path} read")  # every host has read it before it changes
  writer = is_writer()
  out = _open_output(path, sidecar, state, fresh) if writer else None
  try:
    if state["records_done"]:
      _say(f"resuming {path} after {state['records_done']} records "
           f"({state['chunks_done']} chunks)")
    _generate_chunks(out, sidecar, inputs, make_prompt, sampler, sampling, seed, chunk_size,
                     postprocess, state, digest, total, desc, writer)
  finally:
    if out is not None:
      out.close()
  _sync_hosts(f"generate_to_jsonl: {path} written")
  stats = _stats(state)
  _say(f"wrote {path}: {stats['rows']} rows from {stats['records']} records "
       f"({stats['dropped']} dropped), {stats['generated_tokens']} tokens")
  return stats


def generation_stage(records: Iterable[Mapping[str, Any]] | Callable[[Mapping[str, Any]],
                                                                     Iterable[Mapping[str, Any]]],
                     make_prompt: MakePrompt,
                     sampler: Sampler | Callable[[Mapping[str, Any]], Sampler],
                     sampling: SamplingConfig, *, seed: int, chunk_size: int = 64,
                     postprocess: Postprocess | None = None,
                     settings: Mapping[str, Any] | None = None,
                     filename: str = "generations.jsonl"
                     ) -> Callable[[str, Mapping[str, Any]], dict[str, Any]]:
  """A `Stage` fn that runs `generate_to_jsonl` into `stage_dir/filename` and returns its
  stats with the output's `path`. `records` and `sampler` may be functions of the earlier
  stages' results (e.g. a sampler for the checkpoint the previous stage trained)."""

  def fn(stage_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    path = fs.join(stage_dir, filename)
    stats = generate_to_jsonl(
        path, records(results) if callable(records) else records, make_prompt,
        sampler(results) if callable(sampler) else sampler, sampling, seed=seed,
        chunk_size=chunk_size, postprocess=postprocess, settings=settings,
        desc=fs.basename(stage_dir))
    return {"path": path, **stats}

  return fn


def _generate_chunks(out, sidecar: str, inputs: Iterator[Mapping[str, Any]],
                     make_prompt: MakePrompt, sampler: Sampler, sampling: SamplingConfig,
                     seed: int, chunk_size: int, postprocess: Postprocess | None,
                     state: dict[str, Any], digest: str, total: int | None, desc: str,
                     writer: bool) -> None:
  """Generates and appends chunk after chunk, updating `state` (and the sidecar)."""
  base_key = jax.random.key(seed)
  n = sampling.num_samples
  run_tokens, run_start = 0, time.perf_counter()
  with tqdm(total=total, initial=state["records_done"], desc=desc, unit="record",
            dynamic_ncols=True, disable=not writer) as bar:
    while True:
      chunk = list(itertools.islice(inputs, chunk_size))
      if not chunk:
        break
      start = time.perf_counter()
      prompts = [_prompt(make_prompt, r) for r in chunk]
      digest = _extend_digest(digest, chunk, prompts)
      done_before = state["records_done"]

      def progress(rows_done: int, tokens_done: int) -> None:
        bar.update(done_before + rows_done // n - bar.n)
        elapsed = time.perf_counter() - run_start
        bar.set_postfix(tok_per_s=f"{(run_tokens + tokens_done) / max(elapsed, 1e-9):.1f}",
                        refresh=False)

      key = jax.random.fold_in(base_key, state["chunks_done"])
      result = sampler.generate(prompts, sampling, key, progress)
      lines, dropped = [], 0
      for i, record in enumerate(chunk):
        completions = completion_records(result, i)
        row = (postprocess(record, completions) if postprocess is not None
               else {**record, "completions": completions})
        if row is None:
          dropped += 1
        else:
          lines.append(json.dumps(dict(row), ensure_ascii=False) + "\n")
      data = "".join(lines).encode("utf-8")
      tokens = result.num_generated_tokens
      run_tokens += tokens
      state.update(records_done=done_before + len(chunk), bytes=state["bytes"] + len(data),
                   chunks_done=state["chunks_done"] + 1, rows=state["rows"] + len(lines),
                   dropped=state["dropped"] + dropped,
                   generated_tokens=state["generated_tokens"] + tokens,
                   seconds=state["seconds"] + time.perf_counter() - start,
                   inputs_digest=digest)
      if writer:
        _append(out, data, state["bytes"] - len(data))
        _write_json_atomic(sidecar, state)
      bar.update(state["records_done"] - bar.n)
  state["complete"] = True
  if writer:
    _write_json_atomic(sidecar, state)


def _prompt(make_prompt: MakePrompt, record: Mapping[str, Any]) -> list[int] | str:
  prompt = make_prompt(record)
  return prompt if isinstance(prompt, str) else [int(t) for t in prompt]


def _extend_digest(digest: str, records: list[Mapping[str, Any]],
                   prompts: list[list[int] | str]) -> str:
  """Chains the hash of each (record, prompt) onto `digest`."""
  for record, prompt in zip(records, prompts):
    item = json.dumps([record, prompt], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256((digest + item).encode("utf-8")).hexdigest()
  return digest


def _skip_done(path: str, inputs: Iterator[Mapping[str, Any]], make_prompt: MakePrompt,
               state: Mapping[str, Any]) -> str:
  """Consumes the records already done; checks they are the ones the file was made from."""
  done, digest = state["records_done"], ""
  while done:
    chunk = list(itertools.islice(inputs, min(done, 1024)))
    if not chunk:
      raise ValueError(f"{path} holds the rows of {state['records_done']} records, but only "
                       f"{state['records_done'] - done} records were given")
    digest = _extend_digest(digest, chunk, [_prompt(make_prompt, r) for r in chunk])
    done -= len(chunk)
  if digest != state["inputs_digest"]:
    raise ValueError(f"{path} was made from other input records or prompts: the first "
                     f"{state['records_done']} records (or the prompts made from them) differ "
                     f"from those it was made from (recorded in {progress_path(path)}); use "
                     "another path, or remove both files to start over")
  return digest


def _check_settings(path: str, state: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
  """Raises ValueError naming `path` and the differing settings, unless they match."""
  if state.get("version") != _VERSION:
    raise ValueError(f"{progress_path(path)} has version {state.get('version')}, not "
                     f"{_VERSION}; use another path")
  recorded = dict(state["settings"])
  differing = _differences(
      {k: v for k, v in recorded.items() if k != "records"},
      {k: v for k, v in wanted.items() if k != "records"})
  # The number of records is known from a sequence, or once an iterator ran out.
  then = recorded.get("records")
  if then is None and state["complete"]:
    then = state["records_done"]
  now = wanted.get("records")
  if now is not None and ((then is not None and then != now) or now < state["records_done"]):
    differing.append(f"records: {then if then is not None else state['records_done']} "
                     f"in the file, {now} now")
  if differing:
    raise ValueError(f"{path} was generated with other settings than now ("
                     + "; ".join(differing) + f"; recorded in {progress_path(path)}); "
                     "nothing was changed: use another path, or remove both files to start "
                     "over")


def _differences(then: Any, now: Any, prefix: str = "") -> list[str]:
  if isinstance(then, dict) and isinstance(now, dict):
    found = []
    for key in sorted(set(then) | set(now)):
      found += _differences(then.get(key), now.get(key), f"{prefix}{key}.")
    return found
  return [] if then == now else [f"{prefix[:-1]}: {then!r} in the file, {now!r} now"]


def _open_output(path: str, sidecar: str, state: Mapping[str, Any], fresh: bool):
  """Locks `path` for appending and cuts off whatever follows its last complete chunk."""
  if fresh:
    fs.makedirs(fs.dirname(fs.resolve(path)))
    _write_json_atomic(sidecar, state)
  elif not fs.exists(path) and state["bytes"]:
    raise ValueError(f"{path} is missing, but {sidecar} records {state['records_done']} records "
                     "written to it; remove the sidecar to start over")
  if fs.local_path(path) is None:
    return _open_remote_output(path, sidecar, state)
  out = fs.open(path, "ab")
  try:
    try:
      fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise RuntimeError(f"another run is writing {path}; stop it first") from None
      # A file system without locks: carry on unlocked.
    if _read_state(sidecar) != state:
      raise RuntimeError(f"{sidecar} changed while this run started; is another run writing "
                         f"{path}?")
    if _unfinished_tail(os.fstat(out.fileno()).st_size, state, path, sidecar):
      out.truncate(state["bytes"])
      out.flush()
      os.fsync(out.fileno())
  except BaseException:
    out.close()
    raise
  return out


def _unfinished_tail(size: int, state: Mapping[str, Any], path: str, sidecar: str) -> bool:
  """Whether the output holds bytes after its complete chunks (said, to be cut off); an
  output shorter than its recorded chunks is an error."""
  if size < state["bytes"]:
    raise ValueError(f"{path} has {size} bytes, fewer than the {state['bytes']} of complete "
                     f"chunks recorded in {sidecar}; it was changed by something else")
  if size > state["bytes"]:
    _say(f"discarding {size - state['bytes']} bytes of an unfinished chunk at the end of "
         f"{path}")
  return size > state["bytes"]


def _open_remote_output(path: str, sidecar: str, state: Mapping[str, Any]):
  """`_open_output` for a URL: no lock, and an unfinished chunk is cut off by rewriting the
  file's first `bytes` bytes."""
  if _read_state(sidecar) != state:
    raise RuntimeError(f"{sidecar} changed while this run started; is another run writing "
                       f"{path}?")
  size = fs.getsize(path) if fs.exists(path) else 0
  if _unfinished_tail(size, state, path, sidecar):
    with fs.open(path, "rb") as f:
      complete = f.read(state["bytes"])
    fs.write_atomically(path, complete)
  return fs.open(path, "ab")


def _append(out, data: bytes, offset: int) -> None:
  """Appends one chunk's bytes at `offset` (the end of the file) and makes them durable."""
  local = hasattr(out, "fileno")  # a URL's file (GFile) can neither seek to its end nor sync
  if local:
    end = out.seek(0, os.SEEK_END)
    if end != offset:
      raise RuntimeError(f"{out.name} has {end} bytes where {offset} were expected; is another "
                         "run writing it?")
  out.write(data)
  out.flush()
  if local:
    os.fsync(out.fileno())


def _read_state(sidecar: str) -> dict[str, Any] | None:
  if not fs.exists(sidecar):
    return None
  with fs.open(sidecar) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{sidecar} is not valid JSON ({e.msg}); it is replaced atomically, so "
                       "something else wrote it") from None


def _write_json_atomic(path: str, value: Any) -> None:
  fs.write_atomically(path, json.dumps(value, indent=1))  # fsyncs the file and the rename


def _stats(state: Mapping[str, Any]) -> dict[str, Any]:
  seconds = float(state["seconds"])
  return {"records": state["records_done"], "rows": state["rows"], "dropped": state["dropped"],
          "chunks": state["chunks_done"], "generated_tokens": state["generated_tokens"],
          "seconds": seconds,
          "tokens_per_second": state["generated_tokens"] / max(seconds, 1e-9)}


def _jsonable(value: Any) -> Any:
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def _say(message: str) -> None:
  if is_writer():
    print(f"[align_jax] generate: {message}", flush=True)
