"""jsonl reading errors name the file and line; writing never clobbers."""

import pytest

from align_jax.data import JsonlError, read_jsonl, write_jsonl


def test_round_trip_and_blank_lines(tmp_path):
  path = str(tmp_path / "a.jsonl")
  assert write_jsonl(path, [{"x": 1}, {"x": "é"}]) == 2
  with open(path, "a") as f:
    f.write("\n")
  assert list(read_jsonl(path)) == [{"x": 1}, {"x": "é"}]


def test_errors_name_file_and_line(tmp_path):
  path = tmp_path / "b.jsonl"
  path.write_text('{"prompt": "a"}\n\n{"prompt": \n')
  with pytest.raises(JsonlError, match=r"b.jsonl, line 3: not valid JSON"):
    list(read_jsonl(str(path)))
  path.write_text('{"prompt": "a"}\n[1, 2]\n')
  with pytest.raises(JsonlError, match=r"b.jsonl, line 2: expected a JSON object, got list"):
    list(read_jsonl(str(path)))
  path.write_text('{"prompt": "a"}\n{"prompt": 3}\n')
  check = lambda r: None if isinstance(r.get("prompt"), str) else "field 'prompt' must be text"
  with pytest.raises(JsonlError, match=r"b.jsonl, line 2: field 'prompt' must be text"):
    list(read_jsonl(str(path), check))


def test_write_refuses_to_overwrite(tmp_path):
  path = str(tmp_path / "c.jsonl")
  write_jsonl(path, [{"keep": True}])
  with pytest.raises(FileExistsError, match="refusing to overwrite"):
    write_jsonl(path, [{"keep": False}])
  assert list(read_jsonl(path)) == [{"keep": True}]
  write_jsonl(path, [{"keep": False}], overwrite=True)
  assert list(read_jsonl(path)) == [{"keep": False}]
