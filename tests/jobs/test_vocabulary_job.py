"""The vocabulary job: a sentencepiece model of exactly VOCAB_SIZE pieces from every text
field of align_jax's data files, reproducible, never replaced, with clear size errors."""

import json

import pytest

from align_jax import main as entry
from align_jax.data.vocab import load_vocabulary


def _data(tmp_path):
  path = tmp_path / "mixed.jsonl"
  rows = ([{"text": f"The {a} cat sat on mat number {a * 7} near the river bank."}
           for a in range(200)]
          + [{"prompt": f"How many legs has spider {a}?", "response": "Eight legs."}
             for a in range(50)]
          + [{"messages": [{"role": "user", "content": "Zebra quartz vexing jumps"},
                           {"role": "assistant", "content": "Wyvern!"}]}])
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _train(tmp_path, workdir, size, data):
  return entry.main(["--gin_file=gin/runs/vocabulary.gin", f"--gin.WORKDIR='{workdir}'",
                     f"--gin.TRAIN_DATA='{data}'", f"--gin.VOCAB_SIZE={size}"])


def test_trains_exactly_vocab_size_pieces_reproducibly(tmp_path):
  data = _data(tmp_path)
  record = _train(tmp_path, tmp_path / "a", 400, data)
  vocab = load_vocabulary(str(tmp_path / "a" / "spm.model"))
  assert vocab.vocab_size == record["vocab_size"] == 400 and record["texts"] == 302
  # Texts of prompt/response and messages records are covered: no unknown pieces.
  ids = vocab.encode("Zebra quartz vexing jumps. Wyvern! spider legs")
  assert 3 not in ids and vocab.decode(ids) == "Zebra quartz vexing jumps. Wyvern! spider legs"
  _train(tmp_path, tmp_path / "b", 400, data)
  assert (tmp_path / "a" / "spm.model").read_bytes() == (tmp_path / "b" / "spm.model").read_bytes()
  with pytest.raises(FileExistsError, match="never replaced"):
    _train(tmp_path, tmp_path / "a", 400, data)


def test_a_size_the_data_cannot_give_names_the_bound(tmp_path):
  with pytest.raises(ValueError, match=r"VOCAB_SIZE=5000 .* must be at most \d+ on this data"):
    _train(tmp_path, tmp_path / "c", 5000, _data(tmp_path))
  assert not (tmp_path / "c" / "spm.model").exists()
