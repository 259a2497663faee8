"""Math answers: extraction from solutions, normalisation and equivalence.

`extract_answer` finds the final answer of a model's (or a dataset's) solution: the
content of the last top-level `\\boxed{...}` or `\\fbox{...}` (braces matched, `\\{` and
`\\}` not counting as braces; empty boxes skipped; a box that holds nothing but another
box is unwrapped), or of a brace-less `\\boxed 5` (up to the next `$` or line end).
Without a box, it takes the text after the last `# Answer` header line (the step
format below), else the last `Answer: ...` / `Final answer: ...` / `The (final)
answer is ...` (case-insensitive, `**` markdown allowed around the label); when that text
starts with a `$...$` span, only the span. The result loses surrounding whitespace, `$`,
`\\(...\\)` / `\\[...\\]` and one trailing period; None when nothing (or nothing but
blanks) is found.

`normalize_answer` is a fast string normaliser in the spirit of the Hendrycks MATH and
PRM800K graders. Its rules, in the order applied:

  1. `\\$` and `$` are removed, U+2212 (minus sign) becomes `-`, and one trailing period
     (not part of `..`) is dropped.
  2. `\\left` / `\\right` go (with the null delimiters `\\left.` / `\\right.`), but not
     `\\leftarrow` and the like; `\\lbrace` / `\\rbrace` become `\\{` / `\\}`; `\\dfrac` and
     `\\tfrac` become `\\frac`; `{,}` becomes `,`.
  3. Spacing goes: `\\!`, `\\,`, `\\;`, `\\:`, `\\ ` (control space), `\\quad`,
     `\\qquad`, `\\displaystyle`; `~` becomes a space (and so goes in rule 7);
     `\\\\` is left alone.
  4. Degrees and percent go: `^\\circ`, `^{\\circ}`, `^\\degree`, `\\degree`, `°`, `\\%`, `%`.
  5. Text groups. A trailing `\\text{...}`, `\\textrm{...}` or `\\mbox{...}` whose
     content is unit-like (words, optionally with `.`, `-`, a `/word` and `^2` / `^3`;
     e.g. `\\text{ cm}`, `\\text{ sq. units}`, `\\text{m/s}`), after something else and
     optionally followed by `^2` / `^{3}`, is dropped, repeatedly (`5\\text{ cm}` -> `5`).
     Every other `\\text`, `\\textrm`, `\\textbf`, `\\textit`, `\\mbox` or `\\mathrm`
     group is replaced by its content (`\\text{(A)}` -> `(A)`, `10\\mathrm{~cm}` ->
     `10 cm`, left to rule 6).
  6. A trailing plain unit word (from `_UNIT_WORDS`: `cm`, `inches`, `feet`, `degrees`,
     `dollars`, `hours`, ...; never a single letter, so `5m` stays), optionally preceded
     by `square` / `sq` / `cubic` and followed by `^2` / `^3`, is dropped when it comes
     right after a digit, `}` or `)` (`5 cm` -> `5`, `90 degrees` -> `90`).
  7. Whitespace goes, except that one space is kept between a control word and a
     following letter, so that `\\pi r` does not become the different `\\pir`.
  8. A leading single variable name and `=` go when the rest is non-empty and has no
     other `=`: a letter or a Greek-letter command, optionally with a subscript
     (`x=3`, `k = 3`, `x_1=3`, `\\theta=30` -> the right-hand side).
  9. `\\frac` and `\\sqrt` get braced arguments: `\\frac12`, `\\frac1{2}` and `\\frac 1 2`
     -> `\\frac{1}{2}`, `\\frac\\pi2` -> `\\frac{\\pi}{2}`, `\\sqrt2` -> `\\sqrt{2}`
     (an optional `[n]` of `\\sqrt` kept); an argument is a braced group, a control
     word or a single character, and arguments are normalised the same way inside.
 10. A ratio of plain integers `a/b` (optionally `-a/b`) that is a whole item (the whole
     answer, or delimited by `(`, `[`, `{`, `,` and `)`, `]`, `}`, `,`) becomes
     `\\frac{a}{b}`: `1/2` -> `\\frac{1}{2}`, `(1/2,3)` -> `(\\frac{1}{2},3)`; `2^1/2`
     is left alone.
 11. An answer that as a whole is a number whose commas all sit in groups of three
     (`1,000`, `-12,345.5`) loses its commas; other commas stay (`1,00`, `(1,000)`,
     `[1,100]` are tuples, intervals or typos, not thousands).
 12. Decimals: a missing leading zero is added (`.5` -> `0.5`) and trailing zeros after
     the point are removed, with the point when nothing is left (`2.0` -> `2`,
     `2.50` -> `2.5`).

Set braces `\\{` / `\\}` are kept as they are, and never count as grouping braces when
matching `{` / `}` (boxes, text groups, `\\frac` arguments).

`answers_equal` compares two answers: False when either is None or blank; True when
their normalised forms are equal; otherwise the maintained `math-verify` library
decides symbolic equality of the normalised forms (each parsed as `$...$`), so that
`\\frac{1}{2}` equals `0.5` and `x+1` equals `1+x`. The check is made in both
directions (math-verify's `verify` treats its first argument as the gold answer and is
not symmetric), so `answers_equal(a, b) == answers_equal(b, a)`. It runs without
math-verify's signal-based timeouts, which only work in the main thread and would make
the outcome depend on machine load; instead answers longer than `_MAX_SYMBOLIC_CHARS`
characters skip the symbolic check, and any exception there counts as not equal.

The step format (PRM800K's, used for process supervision): a solution is its steps
separated by blank lines, then a final step `# Answer` + blank line + the answer.
`split_steps` cuts a solution into steps (the answer block is one step), `join_steps`
writes one, and `process_steps` gives the pieces a process reward model is trained and
scored on: every step but the last keeps its blank-line separator, so a per-step label
sits on the separator's last token.
"""

from __future__ import annotations

import re
from typing import Sequence

# Answers longer than this (after normalisation) are compared as strings only.
_MAX_SYMBOLIC_CHARS = 400

_CONTROL = re.compile(r"\\(?:[A-Za-z]+|.)", re.DOTALL)

# --- extraction --------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_LABEL = re.compile(
    r"(?:\bthe\s+(?:final\s+)?answer\s+is\b[ \t*_]*:?|\b(?:final\s+)?answer[ \t*_]*:)"
    r"\s*(?P<answer>[^\n]*\S[^\n]*)", re.IGNORECASE)
_LEADING_MATH_SPAN = re.compile(r"\s*\$+([^$]+)\$+")
_ANSWER_HEADER = re.compile(r"(?:^|\n)[ \t]*#[ \t]*Answer[ \t]*(?=\n|$)")


def _match_brace(text: str, start: int) -> int | None:
  """Index of the `}` closing the `{` at `start`, or None; `\\{`, `\\}` are skipped."""
  depth = 0
  i = start
  while i < len(text):
    char = text[i]
    if char == "\\":
      i += 2
      continue
    if char == "{":
      depth += 1
    elif char == "}":
      depth -= 1
      if depth == 0:
        return i
    i += 1
  return None


def _boxes(text: str) -> list[tuple[int, int, str]]:
  """(start, end, content) of the top-level boxes in `text`, in order."""
  boxes = []
  pos = 0
  while (match := _BOX.search(text, pos)) is not None:
    i = match.end()
    while i < len(text) and text[i] in " \t":
      i += 1
    if i < len(text) and text[i] == "{":
      close = _match_brace(text, i)
      if close is None:  # unclosed (e.g. a truncated generation): not an answer
        pos = match.end()
        continue
      boxes.append((match.start(), close + 1, text[i + 1:close]))
      pos = close + 1
    elif i > match.end() or (i < len(text) and text[i] not in "$\n"):
      # `\boxed 5`: up to the next `$` or the end of the line.
      end = i
      while end < len(text) and text[end] not in "$\n":
        end += 1
      boxes.append((match.start(), end, text[i:end]))
      pos = max(end, match.end())
    else:
      pos = match.end()
  return boxes


def _clean(answer: str) -> str:
  """Strips whitespace, `$`, `\\(...\\)` / `\\[...\\]` and one trailing period."""
  previous = None
  while answer != previous:
    previous = answer
    answer = answer.strip()
    if answer.endswith(".") and not answer.endswith(".."):
      answer = answer[:-1]
    answer = answer.strip().strip("$")
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
      if answer.startswith(opening) and answer.endswith(closing) and len(answer) >= 4:
        answer = answer[2:-2]
  return answer


def extract_answer(text: str) -> str | None:
  """The final answer in a solution: the last box, else the last `Answer:` line."""
  for _, _, content in reversed(_boxes(text)):
    inner = _boxes(content)
    while len(inner) == 1 and not content[:inner[0][0]].strip() \
        and not content[inner[0][1]:].strip():
      content = inner[0][2]
      inner = _boxes(content)
    answer = _clean(content)
    if answer:
      return answer
  headed = _ANSWER_HEADER.split(text)
  if len(headed) > 1:
    answer = _clean(headed[-1].strip().split("\n")[0])
    if answer:
      return answer
  last = None
  pos = 0
  while (match := _ANSWER_LABEL.search(text, pos)) is not None:
    last = match
    pos = match.start() + 1
  if last is None:
    return None
  answer = last.group("answer")
  span = _LEADING_MATH_SPAN.match(answer)
  if span is not None:
    answer = span.group(1)
  answer = _clean(answer.strip().strip("*_"))
  return answer or None


# --- the step format -----------------------------------------------------------------

STEP_SEPARATOR = "\n\n"
ANSWER_HEADER = "# Answer"


def join_steps(steps: Sequence[str], answer: str | None) -> str:
  """A solution in the step format: steps separated by blank lines, then the answer block
  (none when `answer` is None)."""
  parts = [s.strip() for s in steps]
  if answer is not None:
    parts.append(f"{ANSWER_HEADER}{STEP_SEPARATOR}{answer.strip()}")
  return STEP_SEPARATOR.join(parts)


def split_steps(solution: str) -> list[str]:
  """A solution's steps (stripped, empty ones dropped); the `# Answer` header and what
  follows it form the last step, as `join_steps` wrote it."""
  parts = _ANSWER_HEADER.split(solution, maxsplit=1)
  body = parts[0]
  steps = [s.strip() for s in re.split(r"\n[ \t]*\n", body) if s.strip()]
  if len(parts) > 1:
    steps.append(f"{ANSWER_HEADER}{STEP_SEPARATOR}{parts[1].strip()}".rstrip())
  return steps


def step_end_offsets(solution: str) -> list[int]:
  """Where each step followed by a separator ends in `solution`: the offset just past
  the separator's second newline, for the steps of `split_steps` in order (the blank
  line inside the answer block does not end a step)."""
  body = _ANSWER_HEADER.split(solution, maxsplit=1)[0]
  ends, start = [], 0
  for match in re.finditer(r"\n[ \t]*\n", body):
    if body[start:match.start()].strip():
      ends.append(match.end())
    start = match.end()
  if len(body) < len(solution) and body[start:].strip():  # the step right before the answer
    ends.append(len(body) + 1)  # its separator ends the body; the header's newline follows
  return ends


def process_steps(solution: str | Sequence[str]) -> list[str]:
  """The pieces a process reward model sees: each step, every one but the last followed
  by the blank-line separator (its label goes on the separator's last token)."""
  steps = split_steps(solution) if isinstance(solution, str) else [s.strip() for s in solution]
  return [s + STEP_SEPARATOR for s in steps[:-1]] + steps[-1:]


# --- normalisation -----------------------------------------------------------------

_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])\.?")
_SPACING = re.compile(r"\\\\|\\[!,;: ]|\\q?quad(?![A-Za-z])|\\displaystyle(?![A-Za-z])")
_DEGREES = re.compile(
    r"\^\s*\{\s*\\(?:circ|degree)\s*\}|\^\s*\\(?:circ|degree)(?![A-Za-z])"
    r"|\\degree(?![A-Za-z])|°")
_PERCENT = re.compile(r"\\?%")
_TEXT_GROUP = re.compile(r"\\(text|textrm|textbf|textit|mbox|mathrm)(?![A-Za-z])\s*(?=\{)")
_UNIT_GROUPS = frozenset(("text", "textrm", "mbox"))
_UNIT_TEXT = re.compile(
    r"[A-Za-z][A-Za-z .\-]*(?:/\s*[A-Za-z]+)?(?:\^\{?[23]\}?)?")
_GROUP_TAIL = re.compile(r"\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*")
_UNIT_WORDS = (
    "units", "unit", "cm", "mm", "km", "meters", "meter", "metres", "metre",
    "centimeters", "centimeter", "millimeters", "kilometers", "inches", "inch", "feet",
    "foot", "ft", "yards", "yard", "yd", "miles", "mile", "degrees", "degree", "radians",
    "dollars", "dollar", "cents", "cent", "seconds", "second", "sec", "minutes",
    "minute", "min", "hours", "hour", "hrs", "hr", "days", "day", "weeks", "week",
    "months", "month", "years", "year", "mph", "kg", "grams", "gram", "pounds", "pound",
    "lbs", "lb", "ounces", "ounce", "oz", "liters", "liter", "litres", "gallons",
    "gallon", "ml", "cups", "cup")
_TRAILING_UNIT = re.compile(
    r"(?<=[\d})])\s*(?:(?:square|sq\.?|cubic)\s*)?(?:"
    + "|".join(sorted(_UNIT_WORDS, key=len, reverse=True))
    + r")(?![A-Za-z])(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*$", re.IGNORECASE)
_KEEP_SPACE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")
_GREEK = ("alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa"
          "|lambda|mu|nu|xi|pi|rho|sigma|tau|upsilon|phi|varphi|chi|psi|omega"
          "|Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|Upsilon|Phi|Psi|Omega")
_LEADING_VARIABLE = re.compile(
    r"(?:[A-Za-z]|\\(?:" + _GREEK + r")(?![A-Za-z]))(?:_(?:\{\w+\}|\w))?=(?=[^=]+$)")
_BRACED_COMMAND = re.compile(r"\\(frac|sqrt)(?![A-Za-z])")
_INTEGER_RATIO = re.compile(r"(?<![^(\[{,])(-?)(\d+)/(\d+)(?=$|[)\]},]|\\\})")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LEADING_POINT = re.compile(r"(?<!\d)\.(?=\d)")
_TRAILING_ZEROS = re.compile(r"(?<![\d.])(\d+)\.(\d*?)0+(?!\d)")


def _text_groups(text: str) -> list[tuple[int, int, int, str]]:
  """(start, end, content start, command) of the top-level text groups in `text`."""
  groups = []
  i = 0
  while i < len(text):
    match = _TEXT_GROUP.match(text, i)
    if match is not None:
      close = _match_brace(text, match.end())
      if close is not None:
        groups.append((i, close + 1, match.end() + 1, match.group(1)))
        i = close + 1
        continue
    if text[i] == "\\":
      control = _CONTROL.match(text, i)
      i = control.end() if control else i + 1
    else:
      i += 1
  return groups


def _drop_unit_groups(text: str) -> str:
  while groups := _text_groups(text):
    start, end, content_start, command = groups[-1]
    content = text[content_start:end - 1].strip()
    if (command in _UNIT_GROUPS and text[:start].strip()
        and _GROUP_TAIL.fullmatch(text, end) and _UNIT_TEXT.fullmatch(content)):
      text = text[:start]
    else:
      break
  return text


def _unwrap_text_groups(text: str) -> str:
  out = []
  last = 0
  for start, end, content_start, _ in _text_groups(text):
    out.append(text[last:start])
    out.append(_unwrap_text_groups(text[content_start:end - 1]))
    last = end
  out.append(text[last:])
  return "".join(out)


def _read_argument(text: str, i: int) -> tuple[str, int] | None:
  """The macro argument at `i` (spaces skipped) without its braces, and its end."""
  while i < len(text) and text[i].isspace():
    i += 1
  if i >= len(text) or text[i] in "}$":
    return None
  if text[i] == "{":
    close = _match_brace(text, i)
    return None if close is None else (text[i + 1:close], close + 1)
  if text[i] == "\\":
    control = _CONTROL.match(text, i)
    if control is None:
      return None
    return control.group(0), control.end()
  return text[i], i + 1


def _brace_arguments(text: str) -> str:
  out = []
  i = 0
  while i < len(text):
    match = _BRACED_COMMAND.match(text, i)
    if match is None:
      if text[i] == "\\":
        control = _CONTROL.match(text, i)
        end = control.end() if control else i + 1
      else:
        end = i + 1
      out.append(text[i:end])
      i = end
      continue
    out.append(match.group(0))
    i = match.end()
    if match.group(1) == "sqrt":
      j = i
      while j < len(text) and text[j].isspace():
        j += 1
      if j < len(text) and text[j] == "[" and (close := text.find("]", j)) != -1:
        out.append("[" + _brace_arguments(text[j + 1:close]) + "]")
        i = close + 1
    for _ in range(2 if match.group(1) == "frac" else 1):
      argument = _read_argument(text, i)
      if argument is None:
        break
      out.append("{" + _brace_arguments(argument[0]) + "}")
      i = argument[1]
  return "".join(out)


def _trim_zeros(match: re.Match) -> str:
  integer, fraction = match.group(1), match.group(2)
  return f"{integer}.{fraction}" if fraction else integer


def normalize_answer(answer: str) -> str:
  """`answer` in a canonical string form (rules 1-12 in the module docstring)."""
  text = answer.replace("\\$", "").replace("$", "").replace("\u2212", "-").strip()
  if text.endswith(".") and not text.endswith(".."):
    text = text[:-1]
  # 2. delimiters, fraction styles, grouped commas.
  text = _LEFT_RIGHT.sub("", text)
  text = re.sub(r"\\lbrace(?![A-Za-z])", r"\\{", text)
  text = re.sub(r"\\rbrace(?![A-Za-z])", r"\\}", text)
  text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
  text = text.replace("{,}", ",")
  # 3. spacing.
  text = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text)
  text = text.replace("~", " ")
  # 4. degrees and percent.
  text = _DEGREES.sub("", text)
  text = _PERCENT.sub("", text)
  # 5. text groups: trailing units dropped, the rest unwrapped.
  text = _unwrap_text_groups(_drop_unit_groups(text))
  # 6. plain trailing unit words.
  text = _TRAILING_UNIT.sub("", text)
  # 7. whitespace (one space kept between a control word and a letter).
  text = _KEEP_SPACE.sub(lambda m: m.group(1) + "\0", text)
  text = "".join(text.split()).replace("\0", " ")
  # 8. a leading `x=`.
  if (variable := _LEADING_VARIABLE.match(text)) is not None:
    text = text[variable.end():]
  # 9-10. fraction and root arguments, integer ratios.
  text = _brace_arguments(text)
  text = _INTEGER_RATIO.sub(r"\1\\frac{\2}{\3}", text)
  # 11. thousands separators.
  if _THOUSANDS.fullmatch(text):
    text = text.replace(",", "")
  # 12. decimals.
  text = _LEADING_POINT.sub("0.", text)
  text = _TRAILING_ZEROS.sub(_trim_zeros, text)
  return text


# --- equivalence -------------------------------------------------------------------


def _as_math(answer: str) -> str:
  return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


def _symbolic_equal(a: str, b: str) -> bool:
  """math-verify's verdict, both ways round; False on any error."""
  if len(a) > _MAX_SYMBOLIC_CHARS or len(b) > _MAX_SYMBOLIC_CHARS:
    return False
  try:
    import math_verify  # imported on the first symbolic check only: sympy loads slowly

    parsed_a = math_verify.parse(_as_math(a), fallback_mode="no_fallback",
                                 parsing_timeout=None)
    parsed_b = math_verify.parse(_as_math(b), fallback_mode="no_fallback",
                                 parsing_timeout=None)
    if not parsed_a or not parsed_b:
      return False
    return all(
        math_verify.verify(gold, target, allow_set_relation_comp=True,
                           timeout_seconds=None)
        for gold, target in ((parsed_a, parsed_b), (parsed_b, parsed_a)))
  except Exception:  # noqa: BLE001  (a parse or sympy failure: not equal)
    return False


def answers_equal(a: str | None, b: str | None) -> bool:
  """Whether two answers are equal: as normalised strings, else symbolically."""
  if a is None or b is None or not a.strip() or not b.strip():
    return False
  normalised_a, normalised_b = normalize_answer(a), normalize_answer(b)
  if not normalised_a or not normalised_b:
    return False
  if normalised_a == normalised_b:
    return True
  return _symbolic_equal(normalised_a, normalised_b)
