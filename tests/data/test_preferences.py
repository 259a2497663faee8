"""Readers of public preference data (HH-RLHF transcripts, SHP score ratios) on hand-made
files, plain and gzipped."""

import gzip
import json

import pytest

from align_jax.data.jsonl import JsonlError
from align_jax.data.preferences import read_hh_rlhf, read_shp, transcript_turns


def _write(path, lines):
  data = "".join(json.dumps(line) + "\n" for line in lines).encode()
  if str(path).endswith(".gz"):
    data = gzip.compress(data)
  path.write_bytes(data)
  return str(path)


HH = [
    {"chosen": "\n\nHuman: How tall is a giraffe?\n\nAssistant: About five metres.",
     "rejected": "\n\nHuman: How tall is a giraffe?\n\nAssistant: Very tall."},
    {"chosen": "\n\nHuman: Name a fruit.\n\nAssistant: A pear.\n\nHuman: Another?"
               "\n\nAssistant: A plum.",
     "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: A pear.\n\nHuman: Another?"
                 "\n\nAssistant: No."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.",          # the same answer twice
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.",          # different histories
     "rejected": "\n\nHuman: Hey\n\nAssistant: Hello there."},
]


@pytest.mark.parametrize("name", ["hh.jsonl", "hh.jsonl.gz"])
def test_hh_rlhf_pairs_split_at_the_last_assistant_turn(tmp_path, name):
  records, counts = read_hh_rlhf(_write(tmp_path / name, HH))
  assert counts == {"pairs": 2, "skipped": 2}
  assert records[0] == {"prompt": "How tall is a giraffe?", "chosen": "About five metres.",
                        "rejected": "Very tall."}
  assert records[1] == {"prompt": "Human: Name a fruit.\n\nAssistant: A pear.\n\nHuman: "
                                  "Another?", "chosen": "A plum.", "rejected": "No."}
  assert transcript_turns("\n\nHuman: a\nb\n\nAssistant: c") == [("Human", "a\nb"),
                                                                  ("Assistant", "c")]


def test_shp_keeps_pairs_above_the_score_ratio(tmp_path):
  lines = [{"history": "Which knot holds best?", "human_ref_A": "A bowline.",
            "human_ref_B": "Any knot.", "labels": 1, "score_ratio": 3.5},
           {"history": "Best tea?", "human_ref_A": "Green.", "human_ref_B": "Black, brewed "
            "four minutes.", "labels": 0, "score_ratio": 2.5},
           {"history": "Why is the sky blue?", "human_ref_A": "Scattering.",
            "human_ref_B": "Magic.", "labels": 1, "score_ratio": 2.0}]   # not above 2
  records, counts = read_shp(_write(tmp_path / "shp.jsonl", lines))
  assert counts == {"pairs": 2, "skipped": 1}
  assert records == [{"prompt": "Which knot holds best?", "chosen": "A bowline.",
                      "rejected": "Any knot."},
                     {"prompt": "Best tea?", "chosen": "Black, brewed four minutes.",
                      "rejected": "Green."}]
  assert read_shp(str(tmp_path / "shp.jsonl"), min_score_ratio=3.0)[1]["pairs"] == 1


def test_missing_fields_and_bad_transcripts_name_the_line(tmp_path):
  path = _write(tmp_path / "bad.jsonl", [HH[0], {"chosen": "x"}])
  with pytest.raises(JsonlError, match=r"bad.jsonl, line 2: key 'rejected' is missing"):
    read_hh_rlhf(path)
  path = _write(tmp_path / "worse.jsonl", [{"chosen": "Hello\n\nHuman: x", "rejected": "y"}])
  with pytest.raises(JsonlError, match=r"worse.jsonl, line 1: a transcript must start"):
    read_hh_rlhf(path)
  path = _write(tmp_path / "shp.jsonl", [{"history": "q", "human_ref_A": "a"}])
  with pytest.raises(JsonlError, match=r"line 1: key 'human_ref_B' is missing"):
    read_shp(path)
