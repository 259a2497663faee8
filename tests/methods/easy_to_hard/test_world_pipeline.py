"""The Easy-to-Hard world experiment end to end on a tiny configuration (run by its Colab
notebook, launch/colab/easy_to_hard.py, with the README's command), and its pieces."""

import json
import shutil

import numpy as np
import pytest

from align_jax import main as entry
from align_jax.eval.math import process_steps
from align_jax.methods.easy_to_hard import pipeline
from align_jax.pipeline import read_completion
from align_jax.training.runs import read_run_record
from tests.notebooks import execute, outputs, runs_readme_command
from tests.readme_commands import readme_command

TINY_MODEL = ["num_layers=1", "d_model=32", "num_heads=2", "num_kv_heads=1", "head_dim=16",
              "mlp_dim=64"]
# The evaluators start from the large policy here (a width of their own, so that loading
# them with the small policy's architecture would fail); world.gin starts them from the small.
SMALL = (
    [f"--gin.{size}/TransformerConfig.{field}" for size in ("small", "large")
       for field in TINY_MODEL]
    + ["--gin.large/TransformerConfig.d_model=48", "--gin.large/TransformerConfig.mlp_dim=96",
       "--gin.easy_to_hard_world.evaluator_backbone='sft_large'"]
    + ["--gin.LeveledMathConfig.num_sft=40", "--gin.LeveledMathConfig.num_label=6",
       "--gin.LeveledMathConfig.num_rl=8", "--gin.LeveledMathConfig.num_eval=3",
       "--gin.sft/TrainingSchedule.steps=4", "--gin.sft/TrainingSchedule.batch_size=8",
       "--gin.sft_large/TrainingSchedule.steps=4",
       "--gin.sft_large/TrainingSchedule.batch_size=8",
       "--gin.evaluator/TrainingSchedule.steps=3",
       "--gin.evaluator/TrainingSchedule.batch_size=8",
       # world.gin leaves the implicit PRM out; here it runs (and below, left out).
       "--gin.easy_to_hard_world.implicit=@implicit/TrainingSchedule()",
       "--gin.implicit/TrainingSchedule.steps=3",
       "--gin.implicit/TrainingSchedule.batch_size=4",
       # The tiny policy solves nothing: the gold solutions make the implicit PRM's pairs.
       "--gin.easy_to_hard_world.implicit_gold=True",
       "--gin.RerankConfig.num_samples=4", "--gin.RerankConfig.subsets=2",
       "--gin.RerankConfig.max_new_tokens=24", "--gin.ppo/TrainingSchedule.steps=2",
       "--gin.PPOConfig.rollout_batch_size=8", "--gin.PPOConfig.mini_batch_size=4",
       "--gin.PPOConfig.max_new_tokens=24", "--gin.easy_to_hard_world.eval_samples=2",
       "--gin.easy_to_hard_world.rl_eval_questions=2",
       "--gin.easy_to_hard_world.oracle_rl=True"])


@pytest.mark.slow
def test_world_notebook_runs_every_stage_and_reports(tmp_path):
  assert runs_readme_command("easy_to_hard", "gin/methods/easy_to_hard/world.gin")
  workdir = tmp_path / "run"
  notebook = execute("easy_to_hard", tmp_path, WORKDIR=str(workdir), SEEDS=(0,),
                     OVERRIDES=SMALL)
  seed_dir = workdir / "seed_0"

  def completed(stage):
    return read_completion(str(seed_dir), stage)["result"]

  world = completed("world")
  assert world["heldout_overlap"] == 0
  # The evaluators' labels are the checker's: step labels PRM800K style, one label per
  # solution for the ORM; hard questions never appear among the label questions.
  samples = [json.loads(line) for line in open(seed_dir / "label_samples" / "samples.jsonl")]
  assert samples and all(r["level"] <= 3 for r in samples)
  prm = [json.loads(line) for name in ("prm_train", "prm_eval")
         for line in open(seed_dir / "evaluator_data" / f"{name}.jsonl")]
  by_text = {(r["prompt"], tuple(process_steps(s["text"]))): s for r in samples
             for s in r["samples"]}
  for record in prm:
    sample = by_text[(record["prompt"], tuple(record["steps"]))]
    assert record["labels"] == [int(x) for x in sample["step_labels"]]
    assert all(a >= b for a, b in zip(record["labels"], record["labels"][1:]))  # no recovery
  # Every evaluator starts from the large policy (the implicit PRM is its language model,
  # held to it as the reference).
  for kind in pipeline.EVALUATORS:
    settings = read_completion(str(seed_dir), kind)["settings"]
    assert settings["backbone"] == "sft_large" and settings["model"]["d_model"] == 48
    assert settings["upstream"]["sft_large"]["workdir"].endswith("sft_large")
  implicit = completed("iprm")
  assert implicit["pairs"]["train"] > 0
  assert read_run_record(implicit["workdir"])["reference"].endswith("sft_large")
  rerank = completed("rerank")
  # The step-check diagnostics: every evaluator and both policies' likelihoods, on gold
  # against corrupted first steps of the held-out questions.
  assert set(rerank["first_step_check"]) == {"prm", "orm", "oprm", "iprm", "likelihood/sft",
                                             "likelihood/sft_large"}
  for check in rerank["first_step_check"].values():
    assert all(0.0 <= v <= 1.0 or np.isnan(v) for group in check.values()
               for v in group.values())
  # Every evaluator reranks the small policy's samples; the PRM alone the large one's.
  expected = {"samples_small": {"majority", "weighted/prm/min", "best_of_n/prm/product",
                                "weighted/orm/outcome", "weighted/oprm/min",
                                "weighted/iprm/min", "best_of_n/iprm/outcome", "pass@n"},
              "samples_large": {"majority", "weighted/prm/min", "best_of_n/prm/product",
                                "pass@n"}}
  for policy in ("samples_small", "samples_large"):
    assert rerank[policy]["sizes"] == [1, 2, 4]
    for group in ("easy", "hard"):
      table = rerank[policy]["groups"][group]["accuracy"]
      assert expected[policy] <= set(table)
      assert policy == "samples_small" or not any("orm" in name for name in table)
      for name, values in table.items():  # nothing beats the oracle
        assert all(v <= p + 1e-9 for v, p in zip(values, table["pass@n"])), name
  # The RL comparison's own held-out questions: 2 a level, none a question of any split.
  assert completed("rl_eval")["questions"] == 10 and completed("rl_eval")["overlap"] == 0
  tested = [json.loads(line) for line in open(seed_dir / "rl_eval" / "questions.jsonl")]
  eval_prompts = {json.loads(line)["prompt"] for line in open(seed_dir / "world" /
                                                              "eval_prompts.jsonl")}
  assert len(tested) == 10 and not {r["prompt"] for r in tested} & eval_prompts
  rl = completed("rl_eval")["rows"]
  assert [(r["policy"], r["mode"]) for r in rl] == [
      (p, m) for p in ("sft", "ppo_outcome", "ppo_process", "ppo_implicit", "ppo_oracle")
      for m in ("greedy", "sampled")]
  # The oracle run's prompts: every level's RL questions, hard ones with their answers.
  oracle = [json.loads(line) for line in open(seed_dir / "ppo_oracle" / "prompts.jsonl")]
  rl_prompts = [json.loads(line) for line in open(seed_dir / "world" / "rl_prompts.jsonl")]
  assert [r["prompt"] for r in oracle] == [r["prompt"] for r in rl_prompts]
  assert {r["level"] for r in oracle} == {1, 2, 3, 4, 5}
  assert all(r["answer"] != "Unavailable" for r in oracle)
  # Each PRM's process reward reached its PPO run as a logged reward term.
  for stage in ("ppo_process", "ppo_implicit"):
    metrics = [json.loads(line) for line in open(seed_dir / stage / "metrics.jsonl")]
    assert any("reward/process" in m for m in metrics), stage
  assert not any("reward/process" in m for m in
                 (json.loads(line) for line in open(seed_dir / "ppo_outcome" / "metrics.jsonl")))
  report = (workdir / "report.md").read_text()
  for heading in ("Goals", "Reranking, small policy", "Reranking, large policy",
                  "RL: accuracy per level", "How well the evaluators tell right from wrong",
                  "Inference-compute curves", "Set-up per seed",
                  "Gold first steps against corrupted ones", "large policy's likelihood (min)"):
    assert heading in report
  for name in ("easy_samples", "easy_tokens", "hard_samples", "hard_tokens"):
    assert (workdir / "report" / f"{name}.png").exists()
  assert len(outputs(notebook, "image/png")) == 4
  # The hand-reranked hard question: its samples' step scores and the three choices.
  printed = "".join(outputs(notebook, "stream"))
  assert "gold answer:" in printed and "majority:" in printed and "best-of-N:" in printed
  assert printed.count("step scores [") == 4  # all 4 samples (RerankConfig.num_samples)
  # Rerunning the same command does nothing new: no stage runs again.
  completed = {p: p.stat().st_mtime_ns for p in seed_dir.glob("*/COMPLETED.json")}
  command = (readme_command("gin/methods/easy_to_hard/world.gin")
             + [f"--gin.WORKDIR='{workdir}'", "--gin.SEEDS=(0,)"] + SMALL)
  entry.main(command)
  assert {p: p.stat().st_mtime_ns for p in seed_dir.glob("*/COMPLETED.json")} == completed
  assert len(completed) == 12 + len(pipeline.EVALUATORS) + len(pipeline.PROCESS_PPO)

  # world.gin's default leaves the implicit PRM, its PPO run and the oracle PPO run out;
  # from the same evaluators (copied), the later stages run again without them.
  lean = tmp_path / "lean"
  for stage in ("world", "vocabulary", "sft", "sft_large", "label_samples", "evaluator_data",
                "prm", "orm", "oprm"):
    shutil.copytree(seed_dir / stage, lean / "seed_0" / stage)
  without = [a for a in command if "implicit" not in a and "oracle" not in a]
  without[without.index(f"--gin.WORKDIR='{workdir}'")] = f"--gin.WORKDIR='{lean}'"
  entry.main(without + ["--gin.RerankConfig.likelihood_samples=2"])
  stages = {p.parent.name for p in (lean / "seed_0").glob("*/COMPLETED.json")}
  assert stages == {p.parent.name for p in completed} - {"iprm", "ppo_implicit", "ppo_oracle"}
  rerank = read_completion(str(lean / "seed_0"), "rerank")["result"]
  assert not any("iprm" in name for name in rerank["samples_small"]["groups"]["hard"]["accuracy"])
  assert "iprm" not in rerank["first_step_check"]
  # The likelihood diagnostic scored each question's first 2 of its 4 samples.
  likelihoods = json.loads((lean / "seed_0" / "rerank" / "samples_small_likelihoods.json")
                           .read_text())
  questions = len(list(open(lean / "seed_0" / "samples_small" / "samples.jsonl")))
  assert {len(v) for v in likelihoods.values()} == {2 * questions}
  rows = read_completion(str(lean / "seed_0"), "rl_eval")["result"]["rows"]
  assert {r["policy"] for r in rows} == {"sft", "ppo_outcome", "ppo_process"}
  report = (lean / "report.md").read_text()
  assert "implicit PRM left out" in report and "weighted voting (implicit PRM" not in report
  assert "ppo_oracle" not in report
  assert "ppo_oracle: exact answer reward on every level" in (workdir / "report.md").read_text()


def _rows():
  # Two questions, four samples each: answers, correctness and tokens by hand.
  def sample(answer, correct):
    return {"answer": answer, "correct": correct, "tokens": 10}
  return [
      {"prompt": "q1", "level": 1, "answer": "5",
       "samples": [sample("5", True), sample("6", False), sample("6", False), sample(None, False)]},
      {"prompt": "q2", "level": 4, "answer": "7",
       "samples": [sample("7", True), sample("8", False), sample("8", False), sample("7", True)]},
  ]


def test_rerank_curves_on_a_hand_worked_case():
  config = pipeline.RerankConfig(num_samples=4, subsets=1)
  scores = {key: np.zeros((2, 4)) for _, e, how in pipeline.strategies(config) if e
            for key in [f"{e}/{how}"]}
  # The PRM trusts the right answers: one right sample outweighs two wrong ones.
  scores["prm/min"] = np.array([[0.9, 0.2, 0.3, 0.99], [0.6, 0.1, 0.1, 0.5]])
  scores["orm/outcome"] = np.array([[0.1, 0.8, 0.1, 0.0], [0.1, 0.1, 0.9, 0.1]])
  curves = pipeline.rerank_curves(_rows(), scores, config, easy_levels=(1, 2, 3), seed=0)
  easy, hard = curves["groups"]["easy"]["accuracy"], curves["groups"]["hard"]["accuracy"]
  n4 = curves["sizes"].index(4)
  assert easy["majority"][n4] == 0.0          # "6" twice beats "5" once; None never votes
  assert easy["weighted/prm/min"][n4] == 1.0  # 0.9 for "5" against 0.5 for "6"
  assert easy["best_of_n/prm/min"][n4] == 1.0  # the unanswered 0.99 sample does not count
  # A 2-2 tie goes to the shorter, then the earlier answer: "7" (sample 0) over "8".
  assert hard["majority"][n4] == 1.0
  assert hard["weighted/prm/min"][n4] == 1.0 and hard["pass@n"][n4] == 1.0
  assert easy["weighted/orm/outcome"][n4] == 0.0 and hard["best_of_n/orm/outcome"][n4] == 0.0
  assert easy["pass@n"][n4] == 1.0
  # N=1 over one random subset per size: a single sample's answer, whatever the scores.
  n1 = curves["sizes"].index(1)
  assert easy["majority"][n1] == easy["weighted/prm/min"][n1] == easy["best_of_n/prm/min"][n1]
  assert curves["groups"]["hard"]["tokens_per_sample"] == 10.0


def test_separation_is_the_within_question_auc_on_a_hand_worked_case():
  assert pipeline.pairwise_auc([0.9, 0.5], [0.5, 0.1]) == 0.875   # (1 + 1 + 0.5 + 1) / 4
  assert np.isnan(pipeline.pairwise_auc([], [0.3]))
  # q1 (easy): right 0.9 vs wrong 0.2, 0.3, 0.99 -> 2/3. q2 (hard): right 0.6, 0.5 vs
  # wrong 0.1, 0.1 -> 1. One question per group, so pooled equals within here.
  scores = np.array([[0.9, 0.2, 0.3, 0.99], [0.6, 0.1, 0.1, 0.5]])
  found = pipeline.separation(_rows(), scores, easy_levels=(1, 2, 3))
  assert found["easy"] == {"within": 2 / 3, "questions": 1, "overall": 2 / 3}
  assert found["hard"] == {"within": 1.0, "questions": 1, "overall": 1.0}
  # A score that only knows which question is easier (q2: half its samples right, q1 a
  # quarter) separates pooled samples (9.5 of 15 pairs), not samples of one question.
  by_question = np.array([[0.1] * 4, [0.9] * 4])
  rows = [dict(_rows()[0], level=1), dict(_rows()[1], level=2)]
  found = pipeline.separation(rows, by_question, easy_levels=(1, 2, 3))
  assert found["easy"]["within"] == 0.5 and found["easy"]["overall"] == 9.5 / 15


def test_step_separation_compares_steps_after_a_shared_prefix():
  """Hand-worked: 7+5*2 (gold 7+5=12;*2 / 12*2=24 / answer 24). Samples a and b share the
  right first step and differ at step 2 (b: 12*2=25); c is wrong at step 1."""
  from align_jax.worlds.leveled_math import Problem
  problem = Problem(7, (("+", 5), ("*", 2)), level=1)
  a = problem.solution()
  b = "7+5=12;*2\n\n12*2=25\n\n# Answer\n\n25"
  c = "7+5=13;*2\n\n13*2=26\n\n# Answer\n\n26"
  rows = [{"prompt": problem.question, "level": 1,
           "samples": [{"text": a}, {"text": b}, {"text": c}]}]
  # Prefix (): right a 0.8, b 0.8 vs wrong c 0.9 -> 0. Prefix (step 1): right a 0.7 vs
  # wrong b 0.2 -> 1. Later steps of b and c (after their error) count for nothing.
  scores = [[[0.8, 0.7, 0.6], [0.8, 0.2, 0.99], [0.9, 0.95, 0.99]]]
  found = pipeline.step_separation(rows, scores, easy_levels=(1,))
  assert found["easy"] == {"step": 0.5, "prefixes": 2}
  assert np.isnan(found["hard"]["step"]) and found["hard"]["prefixes"] == 0
  # A score that only knows the step's position (the same at every step 2) is at chance.
  flat = [[[0.8, 0.4, 0.6], [0.8, 0.4, 0.6], [0.8, 0.4, 0.6]]]
  assert pipeline.step_separation(rows, flat, (1,))["easy"]["step"] == 0.5


def test_evaluator_data_can_end_a_record_at_its_first_wrong_step(tmp_path):
  """after_error='drop' ends a PRM record at the first wrong step, its separator kept (the
  step is scored where it would be inside the whole solution); 'negative' keeps the rest."""
  from align_jax.data.jsonl import read_jsonl, write_jsonl
  from align_jax.worlds.leveled_math import Problem
  problem = Problem(7, (("+", 5), ("*", 2)), level=1)
  wrong = "7+5=12;*2\n\n12*2=25\n\n# Answer\n\n25"
  row = {"prompt": problem.question, "level": 1, "samples": [
      {"text": problem.solution(), "correct": True, "finished": True,
       "step_labels": [True, True, True]},
      {"text": wrong, "correct": False, "finished": True, "step_labels": [True, False, False]}]}
  write_jsonl(str(tmp_path / "samples.jsonl"), [row])
  results = {"label_samples": {"path": str(tmp_path / "samples.jsonl")}}
  records = {}
  for after in ("negative", "drop"):
    config = pipeline.EvaluatorDataConfig(after_error=after, heldout=0.0)
    out = pipeline.evaluator_data_stage(config, seed=0)(str(tmp_path / after), results)
    records[after] = [r for split in ("train", "eval") for r in read_jsonl(out[f"prm_{split}"])]
  assert records["negative"][1] == {"prompt": problem.question, "labels": [1, 0, 0],
                                    "steps": ["7+5=12;*2\n\n", "12*2=25\n\n", "# Answer\n\n25"]}
  assert records["drop"][1] == {"prompt": problem.question, "labels": [1, 0],
                                "steps": ["7+5=12;*2\n\n", "12*2=25\n\n"]}
  assert records["drop"][0] == records["negative"][0]
  with pytest.raises(ValueError, match="after_error"):
    pipeline.EvaluatorDataConfig(after_error="ignore")


def _tiny_policy(tmp_path):
  """A random one-layer policy over a vocabulary of the world's format."""
  import jax

  from align_jax.data.vocab import train_sentencepiece
  from align_jax.models import Transformer, TransformerConfig
  from align_jax.models.init import init_params
  from align_jax.parallel import DEFAULT_RULES, create_mesh
  from align_jax.training.runs import LoadedRun
  from align_jax.worlds.leveled_math import LeveledMathConfig, build_world

  world = build_world(LeveledMathConfig(num_sft=50, num_label=0, num_rl=2, num_eval=2))
  vocab = train_sentencepiece(world.texts() + ["User: \nAssistant: "], str(tmp_path / "spm"),
                              320, model_type="bpe", extra_options={
                                  "split_digits": True, "normalization_rule_name": "identity",
                                  "remove_extra_whitespaces": False, "add_dummy_prefix": False,
                                  "user_defined_symbols": "\n", "hard_vocab_limit": False})
  config = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=2,
                             num_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=128)
  return LoadedRun("policy", config, init_params(Transformer(config), jax.random.key(0)),
                   vocab, {}, create_mesh(), DEFAULT_RULES)


def test_monte_carlo_labels_roll_out_from_every_step(tmp_path):
  """Math-Shepherd labels through the generation stage, with a random tiny policy: one
  row per (sample, step); a step whose prefix already holds the answer is labelled by
  that answer alone, whatever the rollouts say."""
  from align_jax.worlds.leveled_math import Problem

  policy = _tiny_policy(tmp_path)
  problem = Problem(7, (("+", 5), ("*", 2)), level=1)
  right = problem.solution()                       # 7+5=12;*2 / 12*2=24 / # Answer / 24
  wrong = "7+5=13;*2\n\n13*2=26\n\n# Answer\n\n26"
  rows = [{"prompt": problem.question, "level": 1, "answer": "24",
           "samples": [{"text": right, "step_labels": [True, True, True]},
                       {"text": wrong, "step_labels": [False, False, False]}]}]
  config_mc = pipeline.EvaluatorDataConfig(labels="monte_carlo", rollouts=2)
  result = pipeline.monte_carlo_labels(str(tmp_path / "mc.jsonl"), rows, policy, "plain",
                                       config_mc, max_new_tokens=8, seed=0)
  labels = pipeline.read_monte_carlo_labels(result["path"])
  assert sorted(labels) == [(0, 0), (0, 1)] and len(labels[(0, 0)]) == len(labels[(0, 1)]) == 3
  assert labels[(0, 0)][2] == 1 and labels[(0, 1)][2] == 0   # the answer step: its own answer
  assert all(x in (0, 1) for ls in labels.values() for x in ls)
  assert 0.0 <= result["agreement_with_checker"] <= 1.0
  written = [json.loads(line) for line in open(tmp_path / "mc.jsonl")]
  assert [(r["sample"], r["step"]) for r in written] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1),
                                                         (1, 2)]


def test_likelihood_scores_are_each_pieces_mean_token_log_probability(tmp_path):
  """Against log-probabilities computed here from the model's logits over the whole
  rendered sequence (prompt, then the pieces a process reward model sees)."""
  import jax

  from align_jax.models import Transformer
  from align_jax.pipeline.generation import prompt_renderer
  from align_jax.worlds.leveled_math import Problem

  policy = _tiny_policy(tmp_path)
  problem = Problem(7, (("+", 5), ("*", 2)), level=1)
  texts = [problem.solution(), "7+5=13;*2\n\n13*2=26\n\n# Answer\n\n26", "7+5=12"]
  rows = [{"prompt": problem.question, "level": 1, "samples": [{"text": t} for t in texts]}]
  found = pipeline.likelihood_scores(rows, policy, "plain")
  prompt = prompt_renderer(policy.vocab, "plain")(rows[0])
  for text, entry in zip(texts, found):
    pieces = [[int(t) for t in policy.vocab.encode(p)] for p in process_steps(text)]
    tokens = prompt + [t for piece in pieces for t in piece]
    logits = np.asarray(Transformer(policy.config).apply({"params": policy.params},
                                                         np.array([tokens])))[0]
    logprobs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    start, expected = len(prompt), []
    for piece in pieces:
      expected.append(np.mean([logprobs[start + k - 1, t] for k, t in enumerate(piece)]))
      start += len(piece)
    assert len(entry["steps"]) == len(pieces) == len(process_steps(text))
    np.testing.assert_allclose(entry["steps"], expected, atol=2e-5)


def test_corrupted_first_steps_and_the_first_step_check_on_hand_cases():
  """7+5*2-8: the first step 7+5=12;*2-8 becomes 7+5=13;*2-8 (result) and 7+5=12;*2-9
  (rest), the rest of the solution gold; a one-operation question has no second step to
  carry an error and is left out."""
  from align_jax.worlds.leveled_math import Problem
  easy = Problem(7, (("+", 5), ("*", 2), ("-", 8)), level=1)
  hard = Problem(3, (("*", 12), ("-", 11), ("+", 4), ("-", 9)), level=4)
  short = Problem(2, (("+", 3),), level=1)
  rows = [{"prompt": p.question, "level": p.level} for p in (easy, hard, short)]
  found = pipeline.corrupted_first_steps(rows)
  tail = "\n\n12*2=24;-8\n\n24-8=16\n\n# Answer\n\n16"
  assert found["result"][0] == (easy.question, easy.solution(), "7+5=13;*2-8" + tail)
  assert found["rest"][0] == (easy.question, easy.solution(), "7+5=12;*2-9" + tail)
  assert found["rest"][1][2].startswith("3*12=36;-11+4-0\n\n36-11=25;+4-9")
  assert len(found["result"]) == len(found["rest"]) == 2

  def score(pseudo):
    """Checks results, not rests: the first step scores 0.2 when its result is wrong."""
    out = []
    for row in pseudo:
      problem = pipeline.parse_question(row["prompt"])
      gold = problem.steps()[0].split(";")[0]
      for sample in row["samples"]:
        first = sample["text"].split("\n\n")[0].split(";")[0]
        out.append({"steps": [0.9 if first == gold else 0.2, 0.5]})
    return out

  check = pipeline.first_step_check(rows, score, easy_levels=(1, 2, 3))
  assert check == {"easy": {"result": 1.0, "rest": 0.5}, "hard": {"result": 1.0, "rest": 0.5}}


def test_outcome_pairs_put_each_right_answer_against_each_wrong_one_of_its_question():
  right, wrong, other = "3+4=7\n\n# Answer\n\n7", "3+4=8\n\n# Answer\n\n8", "9-1=8"
  records = [{"prompt": "q1", "response": right, "label": 1},
             {"prompt": "q1", "response": wrong, "label": 0},
             {"prompt": "q1", "response": other, "label": 0},
             {"prompt": "q2", "response": wrong, "label": 0}]  # no right answer: no pair
  assert pipeline.outcome_pairs(records) == [
      {"prompt": "q1", "chosen": right, "rejected": wrong},
      {"prompt": "q1", "chosen": right, "rejected": other}]
  # A gold solution joins its question's right answers once (q1 has it already).
  gold = "3+4=7\n\n# Answer\n\n7"
  pairs = pipeline.outcome_pairs(records, {"q1": gold, "q2": gold})
  assert [(p["prompt"], p["rejected"]) for p in pairs] == [("q1", wrong), ("q1", other),
                                                           ("q2", wrong)]
