"""gin/methods/easy_to_hard/prm800k.gin end to end on tiny files in the real formats and
a tiny Hugging Face model: the plumbing, not the numbers."""

import json

import pytest

from align_jax import main as entry
from tests.hf_fixtures import save_tiny_llama


def _lines(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _prm800k_line(problem, steps, answer):
  return {"labeler": "x", "timestamp": "t", "generation": 1,
          "is_quality_control_question": False, "is_initial_screening_question": False,
          "question": {"problem": problem, "ground_truth_answer": answer},
          "label": {"steps": [{"completions": [{"text": text, "rating": rating,
                                                "flagged": False}],
                               "human_completion": None, "chosen_completion": 0}
                              for text, rating in steps],
                    "total_time": 1, "finish_reason": "solution"}}


@pytest.fixture
def files(tmp_path):
  problems = [(f"What is {a} plus {b}?", a + b, level)
              for a, b, level in [(1, 2, 1), (2, 3, 2), (3, 4, 3), (4, 5, 4), (5, 6, 5)]]
  math = tmp_path / "math_train.jsonl"
  _lines(math, [{"problem": p, "level": f"Level {lv}", "type": "Prealgebra",
                 "solution": f"Add them.\n\nThe sum is $\\boxed{{{s}}}$."} for p, s, lv in problems])
  prm = tmp_path / "phase2_train.jsonl"
  _lines(prm, [_prm800k_line(p, [("Add them.", 1), (f"# Answer\n\n{s}", 1)], str(s))
               for p, s, _ in problems]
         + [_prm800k_line(p, [("Subtract them.", -1)], str(s)) for p, s, _ in problems])
  math500 = tmp_path / "math500.jsonl"
  _lines(math500, [{"problem": f"What is {a} plus {b}?", "solution": f"$\\boxed{{{a + b}}}$",
                    "answer": str(a + b), "subject": "Prealgebra", "level": lv,
                    "unique_id": f"test/{i}.json"}
                   for i, (a, b, lv) in enumerate([(7, 1, 2), (8, 9, 5), (6, 6, 4)])])
  model = tmp_path / "hf_model"
  save_tiny_llama(model, max_positions=256)
  return {"math": math, "prm": prm, "math500": math500, "model": model}


@pytest.mark.slow
def test_prm800k_run_trains_sft_and_a_prm_on_easy_levels_and_reranks(tmp_path, files):
  workdir = tmp_path / "run"
  result = entry.main([
      "--gin_file=gin/models/tiny.gin", "--gin_file=gin/methods/easy_to_hard/prm800k.gin",
      f"--gin.WORKDIR='{workdir}'", "--gin.VOCAB_SIZE=300",
      f"--gin.BASE_MODEL='{files['model']}'", f"--gin.MATH_TRAIN='{files['math']}'",
      f"--gin.PRM800K=('{files['prm']}',)", f"--gin.MATH500='{files['math500']}'",
      "--gin.TransformerConfig.dtype='float32'", "--gin.TransformerConfig.remat_policy='none'",
      "--gin.sft/TrainingSchedule.steps=2", "--gin.sft/TrainingSchedule.batch_size=2",
      "--gin.sft/TrainingSchedule.seq_len=192", "--gin.sft/TrainingSchedule.warmup_steps=1",
      "--gin.prm/TrainingSchedule.steps=2", "--gin.prm/TrainingSchedule.batch_size=2",
      "--gin.prm/TrainingSchedule.seq_len=192", "--gin.prm/TrainingSchedule.warmup_steps=1",
      "--gin.RerankConfig.num_samples=2", "--gin.RerankConfig.subsets=1",
      "--gin.RerankConfig.max_new_tokens=8", "--gin.easy_to_hard_prm800k.sampler_batch_size=4"])

  def completed(stage):
    return json.load(open(workdir / stage / "COMPLETED.json"))["result"]

  data = completed("data")
  # Levels 4 and 5 never reach training: 3 easy problems x (1 good + 1 bad trajectory),
  # SFT from the good PRM800K trajectories and the MATH solutions of levels 1-3.
  assert data["counts"]["prm_train"] + data["counts"]["prm_eval"] == 6
  assert data["counts"]["sft"] == 6 and data["counts"]["eval"] == 3
  assert data["eval_questions_in_training"] == 0
  trained = [json.loads(line)["prompt"] for name in ("sft", "prm_train", "prm_eval")
             for line in open(workdir / "data" / f"{name}.jsonl")]
  assert trained and all(p.startswith("# Question\n\n") for p in trained)
  assert not any("4 plus 5" in p or "5 plus 6" in p for p in trained)
  rerank = completed("rerank")
  assert rerank["sizes"] == [1, 2]
  assert rerank["groups"]["easy"]["questions"] == 1 and rerank["groups"]["hard"]["questions"] == 2
  assert "weighted/prm/min" in rerank["groups"]["hard"]["accuracy"]
  assert "orm" not in json.dumps(rerank["groups"]["hard"]["accuracy"])
  assert "Reranking, hard levels" in open(result["report"]).read()
