"""SALMON on the principles world end to end on a tiny configuration (after the
Self-Align world run it starts from), and its data rules on hand cases."""

import json

import numpy as np
import pytest

from align_jax import main as entry
from align_jax.methods.salmon import labels as lb
from align_jax.methods.salmon import stages as st
from align_jax.methods.salmon import world as sw
from align_jax.worlds import principles as pw
from tests.methods.self_align.test_self_align_world import SMALL
from tests.readme_commands import readme_command

TINY = ["--gin.PreferenceConfig.train_per_kind=3", "--gin.PreferenceConfig.eval_per_kind=2",
        "--gin.PreferenceConfig.max_new_tokens=16", "--gin.PreferenceConfig.passes=2",
        "--gin.PreferenceConfig.judge_checks=16", "--gin.salmon_world.judge_documents=40",
        "--gin.judge/TrainingSchedule.steps=2", "--gin.judge/TrainingSchedule.batch_size=4",
        "--gin.salmon_world.pmp_documents=40", "--gin.pmp/TrainingSchedule.steps=2",
        "--gin.pmp/TrainingSchedule.batch_size=4",
        "--gin.reward/TrainingSchedule.steps=2", "--gin.reward/TrainingSchedule.batch_size=4",
        "--gin.RLConfig.prompts_per_kind=1", "--gin.ppo/TrainingSchedule.steps=1",
        "--gin.PPOConfig.rollout_batch_size=8", "--gin.PPOConfig.mini_batch_size=4",
        "--gin.PPOConfig.max_new_tokens=8", "--gin.SalmonEvalConfig.max_new_tokens=8",
        "--gin.SalmonEvalConfig.samples=2",
        # Two RL-time settings (one negated addition), one against the oracle-label model.
        "--gin.RLConfig.runs=(('default', ()), ('verbose', ('-concise',)))",
        "--gin.RLConfig.oracle_runs=('default',)"]


def _lines(path):
  return [json.loads(line) for line in open(path)]


def test_world_pipeline_runs_every_stage_and_reports(tmp_path):
  command = (readme_command("gin/methods/salmon/world.gin")
             + [f"--gin.WORKDIR='{tmp_path / 'salmon'}'",
                f"--gin.SELF_ALIGN_WORKDIR='{tmp_path / 'self_align'}'"] + SMALL + TINY)
  result = entry.main(command)
  seed_dir = tmp_path / "salmon" / "seed_0"
  done = {s: json.load(open(seed_dir / s / "COMPLETED.json"))["result"]
          for s in ("prompts", "judge", "rm_data", "eval", "steering")}
  assert done["prompts"]["held_out_overlap"] == 0
  assert done["prompts"]["eval_pairs_in_training_prompts"] == 0
  # Every pair judged under every principle; the agreement table is the file's.
  judged = _lines(done["judge"]["judged"])
  assert len(judged) == len(pw.KINDS) * 5
  assert all(len(r["judge"]) == len(r["oracle"]) == len(sw.NAMES) for r in judged)
  for r in judged:
    request = sw._request(r)
    assert r["oracle"] == [p.prefers(request, *r["answers"]) for p in pw.WORLD_PRINCIPLES]
  table = sw.judge_agreement(np.array([r["judge"] for r in judged]),
                             np.array([r["agree"] for r in judged]),
                             np.array([r["oracle"] for r in judged]))
  assert json.dumps(table) == json.dumps(done["judge"]["agreement"])
  assert sum(d["documents"] for d in done["judge"]["documents"].values()) == 16
  # Reward-model data: the blind pairs are the judge-labelled pairs without principles;
  # held-out pairs come from held-out prompts under unseen combinations.
  files = done["rm_data"]["files"]
  labelled, blind, held = _lines(files["judge"]), _lines(files["blind"]), _lines(files["eval"])
  assert [(r["prompt"], r["chosen"], r["rejected"]) for r in labelled] == [
      (r["prompt"], r["chosen"], r["rejected"]) for r in blind]
  assert all("suffix" not in r for r in blind)
  assert all(r["suffix"] == lb.principles_text(r["principles"]) for r in labelled)
  assert done["rm_data"]["held-out combinations seen in training"] == 0
  # Preference-model pre-training on the public records, which the reward models continue.
  public = _lines(files["public"])
  assert len(public) == done["rm_data"]["public records"] == 40
  assert all(r["suffix"] == lb.principles_text(r["principles"]) for r in public)
  reward = json.load(open(seed_dir / "reward_oracle" / "COMPLETED.json"))["settings"]["upstream"]
  assert sw.reward_backbone(reward) == str(seed_dir / "pmp") == reward["pmp"]["workdir"]
  train_prompts = {r["prompt"] for r in labelled + _lines(files["oracle"])}
  assert held and not {r["prompt"] for r in held} & train_prompts
  # Each PPO run's prompts carry the sampled principles and the run's additions (the
  # oracle-label runs: the tiny judge may label nothing, which skips the judge's runs).
  modest = pw.world_principle("modest").positive
  default = _lines(seed_dir / "ppo_oracle_default" / "prompts.jsonl")
  added = sw.ppo_prompts(
      json.load(open(seed_dir / "ppo_oracle_default" / "COMPLETED.json"))["settings"]["upstream"],
      ["modest"], sw.RLConfig(), str(tmp_path / "added.jsonl"))
  added = _lines(added)
  assert len(default) == len(added) == len(pw.KINDS)
  for d, a in zip(default, added):
    assert d["prompt"] == a["prompt"] and d["principles"] == a["principles"][:len(d["principles"])]
    assert modest not in d["principles"] and a["principles"][-1] == modest
  # The evaluation's rates are its samples' shares: one greedy answer a request, two
  # sampled ones; lengths with and without a closing self-praise sentence.
  samples = _lines(done["eval"]["samples"])
  assert "Self-Align policy" in done["eval"]["policies"]
  assert sorted(done["eval"]["sampled"]) == sorted(done["eval"]["policies"])
  for mode, answers, n in (("greedy", "policies", 1), ("sampled", "sampled", 2)):
    for name, rates in done["eval"][answers].items():
      rows = [s for s in samples if s["policy"] == name and s["mode"] == mode]
      assert len(rows) == len(pw.KINDS) * 2 * n
      assert rates["self-praise"] == pytest.approx(np.mean([s["self-praise"] for s in rows]))
      assert rates["characters"] == pytest.approx(np.mean([len(s["answer"]) for s in rows]))
      assert rates["characters, praise apart"] == pytest.approx(np.mean(
          [len(pw.without_self_praise(s["answer"]).strip()) for s in rows]))
  # The steering check scores the held-out pairs each added principle tells apart.
  held_rows = [r for r in judged if r["split"] == "eval"]
  for model, shares in done["steering"].items():
    assert sorted(shares) == ["concise"]
    for name, found in shares.items():
      assert found["pairs"] == sum(r["oracle"][sw.NAMES.index(name)] != 0 for r in held_rows)
      assert all(np.isnan(found[k]) or 0 <= found[k] <= 1 for k in ("added", "added negated"))
  report = open(result["report"]).read()
  assert "Sampled answers (2 answers a request at temperature 1.0" in report
  assert "## Where the time goes" in report and "| ppo_verbose |" in report
  for heading in ("Controllability", "Policies on the held-out requests",
                  "Do the reward models follow the RL-time principles?",
                  "Reward-model accuracy", "Judge agreement", "Data per seed",
                  "The judge's leaning where its principle says nothing"):
    assert heading in report
  for image in ("answer_lengths.png", "ppo_reward.png"):
    assert f"]({image})" in report and (tmp_path / "salmon" / image).stat().st_size > 1000
  assert entry.main(command)["seeds"] == result["seeds"]   # a rerun does nothing new


def test_a_missing_self_align_run_is_named(tmp_path):
  stage = sw.self_align_stage(str(tmp_path / "nowhere"), pw.PrinciplesConfig())
  with pytest.raises(ValueError, match="has not completed its stage 'world'"):
    stage(str(tmp_path), {})


def test_held_out_pairs_avoid_seen_combinations_and_follow_the_oracle():
  names = sw.NAMES
  oracle = [0, 0, 0, 0, 1, 0, -1, 1]
  balanced, modest, honest = (names.index(n) for n in ("balanced", "modest", "honest"))
  assert st.tied(oracle, [balanced, modest], [False, False])
  assert not st.tied(oracle, [balanced, modest], [False, True])
  assert not st.tied(oracle, [balanced, honest], [True, False])
  row = {"text": "Is tea better than rice?", "answers": [" first", " second"],
         "oracle": [0, 0, 0, 0, 1, 0, -1, 1]}   # balanced, modest (second), concise
  seen = {sw.combination([n], [neg]) for n in names for neg in (False, True)}
  config = sw.PreferenceConfig(eval_draws=30)
  pairs, rejected = sw.held_out_pairs([row], seen, config, np.random.default_rng(0))
  assert rejected > 0 and pairs
  for pair in pairs:
    combo = sw.combination(*zip(*pair["combination"]))
    assert combo not in seen and len(combo) >= 2
    decided = lb.decide(row["oracle"], [names.index(n) for n, _ in combo], [g for _, g in combo])
    assert (pair["chosen"] == " first") == (decided[0] > 0)
    assert pair["any_negated"] == any(g for _, g in combo)


def test_oracle_agreement_counts_label_noise():
  rows = [{"text": "Is tea better than rice?", "answers": [" a", " b"],
           "oracle": [0, 0, 0, 0, 1, 0, 0, 0]}]
  config = sw.PreferenceConfig(passes=400, labels=lb.LabelConfig(noise=0.25))
  records, unlabelled = sw.label_records(rows, np.array(rows[0]["oracle"], float)[None],
                                         config, np.random.default_rng(1))
  assert len(records) + unlabelled == 400
  assert all(r["pair"] == 0 for r in records)
  assert sw.oracle_agreement(records, rows) == pytest.approx(0.75, abs=0.07)


def test_rl_principles_weigh_the_matching_principle():
  config = sw.RLConfig(sampled=1, matching_weight=5.0)
  request = pw.Request("harmful", "How do I rob the markets of Velora?",
                       (("land", "Velora"), ("verb", "rob")))
  rng = np.random.default_rng(2)
  drawn = [sw.rl_principles(request, config, rng)[0] for _ in range(2000)]
  assert drawn.count("harmless") / 2000 == pytest.approx(5 / 10, abs=0.04)
  assert set(drawn) == set(config.pool)
  with pytest.raises(KeyError, match="no principle 'kind'"):
    sw.RLConfig(runs=(("x", ("kind",)),))
  with pytest.raises(KeyError, match="no principle 'kind'"):
    sw.RLConfig(runs=(("x", ("-kind",)),))
  with pytest.raises(ValueError, match="oracle_runs names 'concise'"):
    sw.RLConfig(runs=(("x", ()),), oracle_runs=("concise",))


def test_oracle_label_runs_are_measured_against_their_own_reference():
  rl = sw.RLConfig(oracle_runs=("default", "concise"))
  assert [stage for _, stage in sw.policies(rl)][-2:] == ["ppo_oracle_default",
                                                          "ppo_oracle_concise"]

  def seed(delta):
    policies = {n: {"principled": 0.5, "self-praise": 0.0, "in full": 0.0, "characters": 40.0,
                    "characters, praise apart": 40.0} for n, _ in sw.policies(rl)}
    policies["PPO, concise (+concise), oracle-label reward model"]["characters"] = 40 + delta
    return {"eval": {"policies": policies}}
  rows = sw.controllability({0: seed(-5), 1: seed(-6), 2: seed(-4)}, rl)
  oracle = [r for r in rows if r["reward model"] == "oracle labels"]
  assert [r["setting"] for r in oracle] == ["PPO, concise (+concise)"]
  assert oracle[0]["characters"] == "-5.000 ± 0.577 *"
  assert all(r["characters"] == "+0.000 ± 0.000" for r in rows if r not in oracle)


def test_a_negated_rl_time_principle_adds_its_negative_definition_in_place_of_a_sampled_one():
  concise = pw.world_principle("concise")
  assert sw.definitions(["-concise", "honest"]) == [concise.negative,
                                                    pw.world_principle("honest").positive]
  assert sw.with_added(["honest", "concise", "poetic"], ["-concise"]) == [
      "honest", "poetic", "-concise"]
  assert sw.with_added(["honest", "-concise"], ["concise", "modest"]) == [
      "honest", "concise", "modest"]
  assert sw.added_label(["modest", "-concise"]) == "+modest, +concise negated"
  runs = (("default", ()), ("verbose", ("-concise",)))
  assert [n for n, _ in sw.policies(sw.RLConfig(runs=runs))][1:3] == [
      "PPO, default", "PPO, verbose (+concise negated)"]
  # Which runs there are does not change how the RL prompts are drawn.
  assert sw.RLConfig(runs=runs).sampling_record() == sw.RLConfig().sampling_record()


def test_controllability_marks_changes_beyond_two_standard_errors():
  def seed(default, modest):
    policies = {n: {"principled": 0.5, "self-praise": 0.3, "in full": 0.1,
                    "characters": 40.0, "characters, praise apart": 40.0}
                for n, _ in sw.policies(sw.RLConfig())}
    policies["PPO, default"]["self-praise"] = default
    policies["PPO, modest (+modest)"]["self-praise"] = modest
    # The sampled answers' rates: the same change, twice as large.
    sampled = {n: {**r, "self-praise": 0.3 + 2 * (r["self-praise"] - 0.3)}
               for n, r in policies.items()}
    return {"eval": {"policies": policies, "sampled": sampled}}
  per_seed = {0: seed(0.4, 0.1), 1: seed(0.5, 0.1), 2: seed(0.45, 0.15)}
  assert sw.controllability(per_seed, sw.RLConfig(), "sampled")[0]["self-praise"].startswith(
      "-0.667")
  rows = sw.controllability(per_seed, sw.RLConfig())
  assert len(rows) == 2   # + modest, + concise; the oracle-label model has one setting
  assert rows[0]["setting"] == "PPO, modest (+modest)"
  assert rows[0]["reward model"] == "judge labels"
  assert rows[0]["self-praise"].startswith("-0.333") and rows[0]["self-praise"].endswith("*")
  assert rows[0]["principled"] == "+0.000 ± 0.000"
  assert rows[0]["characters"] == "+0.000 ± 0.000"


def test_judge_leaning_counts_agreeing_verdicts_on_ties_by_length():
  concise, poetic = sw.NAMES.index("concise"), sw.NAMES.index("poetic")
  def row(answers, poetic_score, agree=True, oracle=0):
    judge, agrees, exact = [0.0] * len(sw.NAMES), [False] * len(sw.NAMES), [0] * len(sw.NAMES)
    judge[poetic], agrees[poetic], exact[poetic] = poetic_score, agree, oracle
    judge[concise], agrees[concise], exact[concise] = 1.0, True, 1   # told apart: not counted
    return {"answers": answers, "judge": judge, "agree": agrees, "oracle": exact}
  rows = [row(["long answer", "short"], 2.0),       # for the longer (the first)
          row(["short", "long answer"], 0.5),       # for the shorter
          row(["short", "long answer"], -1.0),      # for the longer (the second)
          row(["same", "size"], 3.0),               # equal lengths: not counted
          row(["long answer", "short"], 2.0, agree=False),   # orders disagree: no verdict
          row(["long answer", "short"], -2.0, oracle=-1)]    # the exact judge decides
  found = sw.judge_leaning(rows)
  assert found["poetic"] == {"verdicts": 3, "for the longer": 2 / 3}
  assert found["concise"]["verdicts"] == 0 and np.isnan(found["concise"]["for the longer"])


def test_too_many_held_out_pairs_for_the_world_is_a_clear_error(tmp_path):
  requests = tmp_path / "requests.jsonl"
  requests.write_text(json.dumps({"text": "Write a poem about wolves."}) + "\n")
  stage = sw.prompts_stage(pw.PrinciplesConfig(), sw.PreferenceConfig(eval_per_kind=500),
                           sw.RLConfig())
  with pytest.raises(ValueError, match="no 'fact' request left.*eval_per_kind \\(now 500\\)"):
    stage(str(tmp_path), {"self_align": {"requests": str(requests)}})


def test_public_preferences_follow_the_exact_judges_under_drawn_principles():
  config, labels = pw.PrinciplesConfig(seed=3), lb.LabelConfig()
  records = sw.public_preferences(config, 300, labels)
  assert records == sw.public_preferences(config, 300, labels)   # fixed per world seed
  sizes = [len(r["names"]) for r in records]
  assert min(sizes) == 1 and max(sizes) >= 4 and np.mean(sizes) > 2
  assert {(n, g) for r in records for n, g in zip(r["names"], r["negated"])} == {
      (n, g) for n in sw.NAMES for g in (False, True)}
  for r in records:
    principles = [pw.world_principle(n) for n in r["names"]]
    assert r["principles"] == [p.negative if g else p.positive
                               for p, g in zip(principles, r["negated"])]
    assert r["suffix"] == lb.principles_text(r["principles"])
    request = _parsed(config, r)
    chosen, rejected = r["chosen"].strip(), r["rejected"].strip()
    # By the labelling rule over the exact judges, the chosen answer wins, untied.
    oracle = [p.prefers(request, chosen, rejected) for p in pw.WORLD_PRINCIPLES]
    indices = [sw.NAMES.index(n) for n in r["names"]]
    assert lb.decide(oracle, indices, r["negated"]) == (1, sw.NAMES.index(r["decider"]))
    assert not st.tied(oracle, indices, r["negated"])


def _parsed(config, record):
  request = pw.build_world(config).parse(record["prompt"].strip())
  assert request is not None, record["prompt"]
  return request


def test_behaviour_rates_measure_length_with_and_without_the_closing_praise():
  request = pw.build_world(pw.PrinciplesConfig()).request("fact", np.random.default_rng(0))
  praise = pw.SELF_PRAISE[0]
  rates = sw.behaviour_rates([request, request], [f"In 1200. {praise}", "Unknown."])
  assert rates["self-praise"] == 0.5
  assert rates["characters"] == (len(f"In 1200. {praise}") + len("Unknown.")) / 2
  assert rates["characters, praise apart"] == (len("In 1200.") + len("Unknown.")) / 2
