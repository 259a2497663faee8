"""seqio tasks over jsonl files, TFDS datasets and Python functions.

Each task yields examples that are already tokenized: int32 vectors whose
names depend on the task's kind. Records (jsonl lines, TFDS examples after
field mapping, or dicts returned by a Python function) follow one schema
per kind:

  kind='lm'          {"text": str}
                     -> tokens: [BOS] + text + [EOS] (per add_bos/add_eos).
  kind='sft'         {"prompt": str, "response": str, "system": str?}
                     or {"messages": [{"role": ..., "content": ...}, ...]}
                     whose last message has role 'assistant'
                     -> tokens, loss_mask (1 on assistant tokens only).
  kind='preference'  {"prompt": str, "chosen": str, "rejected": str,
                      "system": str?, "suffix": str?}
                     -> chosen_tokens, chosen_loss_mask, rejected_tokens,
                        rejected_loss_mask (prompt + one answer each, then the
                        suffix's tokens, mask 0: text a reward model reads after
                        the response, e.g. the principles it judges by; the
                        reward term `text_input(template, suffix)` builds the
                        same ids).
  kind='process'     {"prompt": str, "steps": [str, ...], "labels": [0|1, ...],
                      "system": str?}  (a process reward: one label per step)
                     or {"prompt": str, "response": str, "label": 0|1}
                     (an outcome reward: one label for the whole response)
                     -> tokens (the prompt rendered with the generation prompt,
                        then each step's tokens, then EOS), label_values (-1
                        where no label applies; a step's label sits on its last
                        token, an outcome label on the EOS).
  kind='prompt'      {"prompt": str, "system": str?}
                     or {"messages": [...]} whose last message is not the
                     assistant's
                     -> prompt_tokens, rendered with the generation prompt
                        (for RL / sampling).

Fields marked `?` are optional; other keys are ignored. Chat kinds are
rendered with a `ChatTemplate` (a name for `chat.get_template` or a template
object; default 'plain'). Their masks come from `ChatTemplate.render` and are
exact: 1 on assistant contents, assistant suffixes and assistant end-of-turn
EOS ids, 0 elsewhere.

BOS/EOS: with `add_bos`, a BOS id is put first unless the sequence already
starts with one (templates such as 'llama3' add their own); vocabularies
without a BOS id (Qwen2) get none. With `add_eos`, an EOS id is appended
unless the sequence already ends with one; for chat kinds it counts as an
assistant token (mask 1), and prompt kind never gets one.

Records are tokenized in Python and the token lists are fed to tf.data.
jsonl tasks read, validate and tokenize every line once, when the task is
registered, so a malformed line (reported as "<file>, line <n>: <problem>")
or an empty split fails before any training starts; the tokenized examples
stay in memory, which suits the dataset sizes used here. Function tasks do
the same each time a dataset is built from them. TFDS tasks tokenize inside
the tf.data pipeline (via `tf.numpy_function`) with the same Python code.

Registering a name that is already registered replaces the old task.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from align_jax.data.chat import ROLES, ChatTemplate, get_template, special_id
from align_jax.data.jsonl import read_jsonl

KINDS = ("lm", "sft", "preference", "process", "prompt")

# Names of the int32 features each kind of task produces.
FEATURES: Mapping[str, tuple[str, ...]] = {
    "lm": ("tokens",),
    "sft": ("tokens", "loss_mask"),
    "preference": (
        "chosen_tokens",
        "chosen_loss_mask",
        "rejected_tokens",
        "rejected_loss_mask",
    ),
    "process": ("tokens", "label_values"),
    "prompt": ("prompt_tokens",),
}

# String fields each kind reads from a TFDS example (see `field_map`).
_TFDS_FIELDS: Mapping[str, tuple[str, ...]] = {
    "lm": ("text",),
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt": ("prompt",),
}

TemplateLike = str | ChatTemplate | None
PathsLike = str | os.PathLike | Sequence[str | os.PathLike]


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"Unknown task kind {kind!r}; expected one of {KINDS}.")


def _resolve_template(template: TemplateLike) -> ChatTemplate:
  if template is None:
    return get_template("plain")
  if isinstance(template, str):
    return get_template(template)
  if isinstance(template, ChatTemplate):
    return template
  raise TypeError(
      f"chat_template must be a template name or a ChatTemplate, got "
      f"{type(template).__name__}."
  )


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def _string_problem(record: Mapping[str, Any], field: str) -> str | None:
  if field not in record:
    return f"missing field {field!r}"
  value = record[field]
  if not isinstance(value, str):
    return f"field {field!r} must be a string, got {type(value).__name__}"
  return None


def _messages_problem(messages: Any, kind: str) -> str | None:
  if not isinstance(messages, list) or not messages:
    return "field 'messages' must be a non-empty list of messages"
  for index, message in enumerate(messages):
    if not isinstance(message, dict):
      return (
          f"field 'messages': message {index} must be an object with 'role' "
          f"and 'content', got {type(message).__name__}"
      )
    role = message.get("role")
    if role not in ROLES:
      return (
          f"field 'messages': message {index} has role {role!r}; expected "
          f"one of {ROLES}"
      )
    if not isinstance(message.get("content"), str):
      return (
          f"field 'messages': message {index} needs a string 'content', got "
          f"{type(message.get('content')).__name__}"
      )
  last = messages[-1]["role"]
  if kind == "sft" and last != "assistant":
    return (
        "field 'messages': the last message must have role 'assistant' (it "
        f"is the reply to train on), got {last!r}"
    )
  if kind == "prompt" and last == "assistant":
    return (
        "field 'messages': the last message must not have role 'assistant' "
        "(a prompt ends where the model's reply starts)"
    )
  return None


def validate_record(record: Mapping[str, Any], kind: str) -> str | None:
  """Returns None if `record` fits the schema of `kind`, else what is wrong."""
  _check_kind(kind)
  if not isinstance(record, Mapping):
    return f"expected an object, got {type(record).__name__}"
  if kind == "lm":
    return _string_problem(record, "text")
  if kind in ("sft", "prompt") and "messages" in record:
    return _messages_problem(record["messages"], kind)
  if kind == "process":
    return _process_problem(record)
  if kind == "sft":
    fields = ("prompt", "response")
  elif kind == "preference":
    fields = ("prompt", "chosen", "rejected")
  else:
    fields = ("prompt",)
  for field in fields:
    problem = _string_problem(record, field)
    if problem:
      if kind == "sft" and field in ("prompt", "response") and field not in record:
        problem += " (sft records need 'prompt' and 'response', or 'messages')"
      return problem
  for optional in ("system", "suffix") if kind == "preference" else ("system",):
    if optional in record:
      problem = _string_problem(record, optional)
      if problem:
        return problem
  return None


def _process_problem(record: Mapping[str, Any]) -> str | None:
  problem = _string_problem(record, "prompt")
  if problem:
    return problem
  if "steps" in record:
    steps, labels = record["steps"], record.get("labels")
    if not isinstance(steps, list) or not steps or not all(isinstance(x, str) for x in steps):
      return "field 'steps' must be a non-empty list of strings"
    if (not isinstance(labels, list) or len(labels) != len(steps)
        or any(x not in (0, 1) for x in labels)):
      return (f"field 'labels' must be a list of {len(steps)} labels (0 or 1), one per step, "
              f"got {labels!r}")
    return None
  if "response" in record:
    problem = _string_problem(record, "response")
    if problem:
      return problem
    if record.get("label") not in (0, 1):
      return f"field 'label' must be 0 or 1, got {record.get('label')!r}"
    return None
  return ("process records need 'steps' and 'labels' (per step) or 'response' and 'label' "
          "(outcome)")


# ---------------------------------------------------------------------------
# Tokenization.
# ---------------------------------------------------------------------------


def _eos_id(vocab: seqio.Vocabulary) -> int:
  eos = special_id(vocab, "eos")
  if eos is None:
    raise ValueError(
        f"add_eos=True but vocabulary {vocab} has no EOS id; pass "
        "add_eos=False."
    )
  return eos


def _prompt_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
  messages = []
  if record.get("system") is not None:
    messages.append({"role": "system", "content": record["system"]})
  messages.append({"role": "user", "content": record["prompt"]})
  return messages


def _render(
    messages: Sequence[Mapping[str, str]],
    vocab: seqio.Vocabulary,
    template: ChatTemplate,
    *,
    generation_prompt: bool,
    add_bos: bool,
    add_eos: bool,
) -> tuple[np.ndarray, np.ndarray]:
  rendered = template.render(
      messages, vocab, add_generation_prompt=generation_prompt
  )
  ids = [int(i) for i in rendered.token_ids]
  mask = [int(m) for m in rendered.loss_mask]
  bos = special_id(vocab, "bos") if add_bos else None
  if bos is not None and (not ids or ids[0] != bos):
    ids.insert(0, bos)
    mask.insert(0, 0)
  if add_eos:
    eos = _eos_id(vocab)
    if not ids or ids[-1] != eos:
      ids.append(eos)
      mask.append(1)
  return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def encode_prompt(
    vocab: seqio.Vocabulary,
    text: str,
    *,
    chat_template: TemplateLike = None,
    add_bos: bool = True,
) -> list[int]:
  """The token ids a model is prompted with for `text`: align_jax's one BOS policy.

  Without a chat template (None): BOS (when `add_bos` and the vocabulary has one), then
  the text's tokens, which is how an 'lm' training example of the same text starts. With
  `chat_template` (a name or a `ChatTemplate`): the text as a user turn followed by the
  assistant's prefix, with BOS first unless the template put it there, which is how a
  'prompt' or 'sft' example of the same text starts. The Sampler (text prompts), the
  generate job and RECITE encode prompts with it, so a prompt gives the same ids, and
  the same greedy output, wherever it is given.
  """
  if chat_template is None:
    ids = [int(i) for i in vocab.encode(text)]
    bos = special_id(vocab, "bos") if add_bos else None
    return ([bos] if bos is not None else []) + ids
  tokens, _ = _render(
      [{"role": "user", "content": text}],
      vocab,
      _resolve_template(chat_template),
      generation_prompt=True,
      add_bos=add_bos,
      add_eos=False,
  )
  return tokens.tolist()


def tokenize_record(
    record: Mapping[str, Any],
    kind: str,
    vocab: seqio.Vocabulary,
    *,
    chat_template: TemplateLike = None,
    add_bos: bool = True,
    add_eos: bool = True,
) -> dict[str, np.ndarray]:
  """Turns one valid record into the int32 features of its kind.

  See the module docstring for schemas and features. Call `validate_record`
  first; this assumes the schema holds.

  Raises:
    ValueError: the template cannot render the messages, or an EOS id is
      needed but the vocabulary has none.
  """
  _check_kind(kind)
  if kind == "lm":
    ids = encode_prompt(vocab, record["text"], add_bos=add_bos)
    if add_eos:
      ids.append(_eos_id(vocab))
    return {"tokens": np.asarray(ids, np.int32)}

  template = _resolve_template(chat_template)
  render = lambda messages, generation_prompt: _render(  # noqa: E731
      messages,
      vocab,
      template,
      generation_prompt=generation_prompt,
      add_bos=add_bos,
      add_eos=add_eos and not generation_prompt,
  )
  if kind == "sft":
    if "messages" in record:
      messages = record["messages"]
    else:
      messages = _prompt_messages(record) + [
          {"role": "assistant", "content": record["response"]}
      ]
    tokens, mask = render(messages, False)
    return {"tokens": tokens, "loss_mask": mask}
  if kind == "preference":
    features = {}
    for side in ("chosen", "rejected"):
      messages = _prompt_messages(record) + [
          {"role": "assistant", "content": record[side]}
      ]
      tokens, mask = render(messages, False)
      if record.get("suffix"):
        extra = np.asarray([int(i) for i in vocab.encode(record["suffix"])], np.int32)
        tokens = np.concatenate([tokens, extra])
        mask = np.concatenate([mask, np.zeros_like(extra)])
      features[f"{side}_tokens"] = tokens
      features[f"{side}_loss_mask"] = mask
    return features
  if kind == "process":
    prompt, _ = render(_prompt_messages(record), True)
    if "steps" in record:
      pieces, labels = record["steps"], [int(x) for x in record["labels"]]
    else:
      pieces, labels = [record["response"]], [None]
    ids, values = [int(i) for i in prompt], [-1] * len(prompt)
    for piece, label in zip(pieces, labels):
      step_ids = [int(i) for i in vocab.encode(piece)]
      ids += step_ids
      values += [-1] * len(step_ids)
      if label is not None and step_ids:
        values[-1] = label
    ids.append(_eos_id(vocab))
    values.append(-1 if labels[-1] is not None else int(record["label"]))
    return {"tokens": np.asarray(ids, np.int32), "label_values": np.asarray(values, np.int32)}
  messages = record["messages"] if "messages" in record else _prompt_messages(record)
  tokens, _ = render(messages, True)
  return {"prompt_tokens": tokens}


def _tokenizer(
    kind: str,
    vocab: seqio.Vocabulary,
    chat_template: TemplateLike,
    add_bos: bool,
    add_eos: bool,
) -> Callable[[Mapping[str, Any]], dict[str, np.ndarray]]:
  _check_kind(kind)
  template = None if kind == "lm" else _resolve_template(chat_template)
  if template is not None:  # once, before any record: a missing marker is no record's fault
    template.check_vocabulary(vocab)
  return lambda record: tokenize_record(
      record,
      kind,
      vocab,
      chat_template=template,
      add_bos=add_bos,
      add_eos=add_eos,
  )


# ---------------------------------------------------------------------------
# Datasets and task construction.
# ---------------------------------------------------------------------------


def examples_to_dataset(
    examples: Sequence[Mapping[str, np.ndarray]], kind: str
) -> tf.data.Dataset:
  """A tf.data.Dataset of int32 vectors from tokenized examples of `kind`."""
  _check_kind(kind)
  columns = {}
  for name in FEATURES[kind]:
    values = [np.asarray(example[name], np.int32).reshape(-1) for example in examples]
    flat = np.concatenate(values) if values else np.zeros([0], np.int32)
    lengths = np.asarray([len(v) for v in values], np.int64)
    columns[name] = tf.RaggedTensor.from_row_lengths(flat, lengths)
  ds = tf.data.Dataset.from_tensor_slices(columns)
  # Slices of a ragged tensor come out as dense vectors inside `map`; this
  # turns the element spec into plain TensorSpecs.
  return ds.map(lambda ex: {k: tf.identity(v) for k, v in ex.items()})


def _output_features(kind: str, vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  mask_vocab = seqio.PassThroughVocabulary(size=2)
  features = {}
  for name in FEATURES[kind]:
    is_mask = name.endswith("loss_mask") or name == "label_values"
    features[name] = seqio.Feature(
        mask_vocab if is_mask else vocab,
        add_eos=False,
        dtype=tf.int32,
        rank=1,
    )
  return features


def _add_task(
    name: str,
    source: seqio.DataSource,
    kind: str,
    vocab: seqio.Vocabulary,
    preprocessors: Sequence[Callable[..., tf.data.Dataset]] = (),
) -> seqio.Task:
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      output_features=_output_features(kind, vocab),
      preprocessors=list(preprocessors),
  )


def _split_paths(
    path_or_paths: PathsLike | Mapping[str, PathsLike],
) -> dict[str, list[str]]:
  if isinstance(path_or_paths, Mapping):
    mapping = dict(path_or_paths)
  else:
    mapping = {"train": path_or_paths}
  result = {}
  for split, paths in mapping.items():
    if isinstance(paths, (str, os.PathLike)):
      paths = [paths]
    result[split] = [os.fspath(p) for p in paths]
    if not result[split]:
      raise ValueError(f"No jsonl files given for split {split!r}.")
  return result


def _read_examples(
    paths: Sequence[str],
    kind: str,
    tokenize: Callable[[Mapping[str, Any]], dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
  """Reads, validates and tokenizes every line of `paths`."""
  examples: list[dict[str, np.ndarray]] = []

  # read_jsonl reports a problem returned by this check together with the
  # file and line number, so rendering errors are located the same way as
  # schema errors. Valid records are tokenized here, once.
  def check(record: dict[str, Any]) -> str | None:
    problem = validate_record(record, kind)
    if problem:
      return problem
    try:
      examples.append(tokenize(record))
    except ValueError as e:
      return str(e)
    return None

  for path in paths:
    for _ in read_jsonl(path, check):
      pass
  return examples


def register_jsonl_task(
    name: str,
    path_or_paths: PathsLike | Mapping[str, PathsLike],
    vocab: seqio.Vocabulary,
    *,
    kind: str,
    chat_template: TemplateLike = None,
    add_bos: bool = True,
    add_eos: bool = True,
) -> seqio.Task:
  """Registers (or replaces) a seqio task reading jsonl files.

  `path_or_paths` is a file, a list of files (split 'train'), or a mapping
  from split name to file(s). Every line is read, validated and tokenized
  now.

  Raises:
    JsonlError: a line is not JSON or does not fit the schema; the message
      names the file, the line number and the field.
    ValueError: a split has no records (the message names its files).
    FileNotFoundError: a file does not exist.
  """
  tokenize = _tokenizer(kind, vocab, chat_template, add_bos, add_eos)
  split_examples = {}
  for split, paths in _split_paths(path_or_paths).items():
    examples = _read_examples(paths, kind, tokenize)
    if not examples:
      raise ValueError(
          f"Task {name!r}, split {split!r}: the dataset is empty (no records "
          f"in {', '.join(paths)})."
      )
    split_examples[split] = examples

  def dataset_fn(
      split: str, shuffle_files: bool, seed: int | None = None
  ) -> tf.data.Dataset:
    del shuffle_files, seed  # Examples are shuffled by the task.
    return examples_to_dataset(split_examples[split], kind)

  source = seqio.FunctionDataSource(
      dataset_fn,
      splits=list(split_examples),
      num_input_examples={s: len(e) for s, e in split_examples.items()},
  )
  return _add_task(name, source, kind, vocab)


def register_function_task(
    name: str,
    generator_fn: Callable[..., Iterable[Mapping[str, Any]]],
    vocab: seqio.Vocabulary,
    *,
    kind: str,
    chat_template: TemplateLike = None,
    add_bos: bool = True,
    add_eos: bool = True,
    splits: Sequence[str] = ("train",),
) -> seqio.Task:
  """Registers (or replaces) a seqio task over records from a Python function.

  `generator_fn(split)` (or `generator_fn()` if it takes no arguments)
  returns a finite iterable of records. Each time a dataset is built, all
  records are collected, validated and tokenized before tf.data sees them.

  Raises (when a dataset is built):
    ValueError: a record does not fit the schema (named by task, split and
      record index) or the function returned no records.
  """
  tokenize = _tokenizer(kind, vocab, chat_template, add_bos, add_eos)
  takes_split = bool(inspect.signature(generator_fn).parameters)

  def dataset_fn(
      split: str, shuffle_files: bool, seed: int | None = None
  ) -> tf.data.Dataset:
    del shuffle_files, seed  # Examples are shuffled by the task.
    records = generator_fn(split) if takes_split else generator_fn()
    examples = []
    for index, record in enumerate(records):
      where = f"Task {name!r}, split {split!r}, record {index}"
      problem = validate_record(record, kind)
      if problem:
        raise ValueError(f"{where}: {problem}")
      try:
        examples.append(tokenize(record))
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if not examples:
      raise ValueError(
          f"Task {name!r}, split {split!r}: the dataset is empty "
          f"({getattr(generator_fn, '__name__', generator_fn)!s} returned no "
          "records)."
      )
    return examples_to_dataset(examples, kind)

  source = seqio.FunctionDataSource(dataset_fn, splits=list(splits))
  return _add_task(name, source, kind, vocab)


def _tfds_field(example: Mapping[str, Any], path: str) -> tf.Tensor:
  """The string at `path` ('a/b' for nested features) as a scalar."""
  value: Any = example
  for part in path.split("/"):
    if not isinstance(value, Mapping) or part not in value:
      available = sorted(value) if isinstance(value, Mapping) else []
      raise ValueError(
          f"TFDS feature {path!r} not found (no {part!r}; available: "
          f"{available})."
      )
    value = value[part]
  if value.dtype != tf.string:
    raise ValueError(
        f"TFDS feature {path!r} has dtype {value.dtype.name}; expected "
        "strings."
    )
  # A list of strings (e.g. several reference answers) contributes its first
  # entry; an empty list gives "".
  return tf.strings.reduce_join(tf.reshape(value, [-1])[:1])


def register_tfds_task(
    name: str,
    tfds_name: str,
    vocab: seqio.Vocabulary,
    *,
    kind: str,
    field_map: Mapping[str, str],
    split_map: Mapping[str, str] | None = None,
    chat_template: TemplateLike = None,
    add_bos: bool = True,
    add_eos: bool = True,
    tfds_data_dir: str | None = None,
) -> seqio.Task:
  """Registers (or replaces) a seqio task over a TFDS dataset.

  `tfds_name` must include a version, as seqio requires
  (e.g. 'natural_questions_open:1.0.0').
  `field_map` maps each schema field of `kind` ('text'; 'prompt' and
  'response'; 'prompt', 'chosen' and 'rejected'; or 'prompt') to a string
  feature of the dataset ('a/b' reaches into nested features; for a list of
  strings the first one is used), e.g. {"prompt": "question", "response":
  "answer"} for natural_questions_open. `split_map` maps task splits to TFDS
  splits (default: 'train' and 'validation' as they are).

  Raises:
    ValueError: `field_map` does not name exactly the fields of `kind`
      (now), or names a feature the dataset lacks (when a dataset is built).
  """
  _check_kind(kind)
  if kind not in _TFDS_FIELDS:
    raise ValueError(f"kind {kind!r} is not available from TFDS (its labels are lists); "
                     "write the records to jsonl or use register_function_task.")
  fields = _TFDS_FIELDS[kind]
  if set(field_map) != set(fields):
    raise ValueError(
        f"field_map for kind {kind!r} must map exactly {fields} to TFDS "
        f"features, got keys {sorted(field_map)}."
    )
  tokenize = _tokenizer(kind, vocab, chat_template, add_bos, add_eos)
  names = FEATURES[kind]
  field_map = dict(field_map)

  def tokenize_strings(*values: bytes) -> tuple[np.ndarray, ...]:
    record = {
        field: value.decode("utf-8") for field, value in zip(fields, values)
    }
    features = tokenize(record)
    return tuple(features[n] for n in names)

  def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
    def convert(example: Mapping[str, Any]) -> dict[str, tf.Tensor]:
      values = [_tfds_field(example, field_map[f]) for f in fields]
      outputs = tf.numpy_function(
          tokenize_strings, values, [tf.int32] * len(names), stateful=False
      )
      result = {}
      for feature, tensor in zip(names, outputs):
        tensor.set_shape([None])
        result[feature] = tensor
      return result

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  source = seqio.TfdsDataSource(
      tfds_name,
      tfds_data_dir=tfds_data_dir,
      splits=dict(split_map) if split_map else ("train", "validation"),
  )
  return _add_task(name, source, kind, vocab, preprocessors=[preprocess])
