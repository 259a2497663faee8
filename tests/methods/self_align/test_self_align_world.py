"""Self-Align's world experiment (the base model's rule following) end to end on a tiny
configuration, run as a subprocess and killed inside every sampling stage on a second
run, and its prompts."""

import json
from pathlib import Path

import pytest

from align_jax.methods.self_align import world
from align_jax.worlds import principles as pw
from tests.process_fixtures import kill_after, start, tail
from tests.readme_commands import readme_command

# A tiny model pretrained just long enough to write the world's turns (principle-driven
# answers need the thoughts turn and the answer turn), and every stage cut small.
SMALL = ["--gin.SEEDS=(0,)", "--gin.TransformerConfig.num_layers=2",
         "--gin.TransformerConfig.d_model=64", "--gin.TransformerConfig.num_heads=4",
         "--gin.TransformerConfig.num_kv_heads=2", "--gin.TransformerConfig.head_dim=16",
         "--gin.TransformerConfig.mlp_dim=128", "--gin.PrinciplesConfig.rule_documents=300",
         "--gin.PrinciplesConfig.plain_dialogues=100", "--gin.pretrain/TrainingSchedule.steps=250",
         "--gin.pretrain/TrainingSchedule.batch_size=16",
         "--gin.pretrain/TrainingSchedule.seq_len=128",
         "--gin.BaseEvalConfig.requests_per_kind=2",
         "--gin.BaseEvalConfig.max_new_tokens=8", "--gin.BaseEvalConfig.thoughts_tokens=4",
         "--gin.PrinciplesConfig.request_lists=40", "--gin.PrinciplesConfig.topic_lists=40",
         "--gin.PrinciplesConfig.topical_request_lists=40",
         "--gin.PrinciplesConfig.judging_documents=40",
         "--gin.SelfInstructConfig.rounds=2", "--gin.SelfInstructConfig.prompts_per_round=6",
         "--gin.SelfInstructConfig.max_new_tokens=16", "--gin.RedTeamConfig.topic_prompts=3",
         "--gin.RedTeamConfig.topic_rounds=1", "--gin.RedTeamConfig.max_question_tokens=16",
         "--gin.AnswerConfig.max_new_tokens=32", "--gin.VerboseConfig.max_new_tokens=24",
         "--gin.VerboseConfig.min_chars=1",
         "--gin.engrave/TrainingSchedule.steps=2", "--gin.engrave/TrainingSchedule.batch_size=4",
         "--gin.clone/TrainingSchedule.steps=2", "--gin.clone/TrainingSchedule.batch_size=4",
         "--gin.ComplianceConfig.max_new_tokens=8", "--gin.ComplianceConfig.thoughts_tokens=4"]


def command_for(workdir):
  """The README's command for the world run, on the tiny configuration in `workdir`."""
  return (readme_command("gin/methods/self_align/world.gin") + [f"--gin.WORKDIR='{workdir}'"]
          + SMALL)


def _check_world_run(workdir):
  """What the tiny world run must have written: every stage's records and the report."""
  seed_dir = workdir / "seed_0"
  done = json.load(open(seed_dir / "base_eval" / "COMPLETED.json"))["result"]
  assert set(done["compliance"]) == set(world.CONDITIONS)
  samples = [json.loads(line) for line in open(seed_dir / "base_eval" / "samples.jsonl")]
  assert len(samples) == len(world.CONDITIONS) * len(pw.KINDS) * 2
  # The judged share per kind is the samples' own.
  for condition in world.CONDITIONS:
    for kind in pw.KINDS:
      rows = [s for s in samples if s["condition"] == condition and s["kind"] == kind]
      assert done["compliance"][condition][kind] == sum(s["principled"] for s in rows) / 2
  corpus = [json.loads(line)["text"] for line in open(seed_dir / "world" / "corpus.jsonl")]
  assert len(corpus) == 560
  assert sum(t.startswith(pw.JUDGE_LAYOUT.split("\n")[0]) for t in corpus) == 40
  report = (workdir / "report.md").read_text()
  for heading in ("Principled compliance", "Compliance per principle", "Stage counts",
                  "What the pipeline trained on",
                  "Answer lengths", "rule following", "Set-up per seed"):
    assert heading in report
  assert (workdir / "answer_lengths.png").stat().st_size > 0
  # Self-Align's stages: the engraving data is what the filters kept, queries are never
  # held-out requests, and each model's compliance is its samples' judged share.
  answers = json.load(open(seed_dir / "principle_answers" / "COMPLETED.json"))["result"]
  engrave = [json.loads(line) for line in open(seed_dir / "principle_answers" / "engrave.jsonl")]
  assert len(engrave) == answers["filters"]["kept"] > 0
  held_out = {r["text"] for r in map(json.loads, open(seed_dir / "world" / "requests.jsonl"))}
  assert not {r["prompt"].strip() for r in engrave} & held_out
  assert all(r["prompt"].startswith(" ") and r["response"].startswith(" ") for r in engrave)
  clone = [json.loads(line) for line in open(seed_dir / "verbose_answers" / "clone.jsonl")]
  assert clone and all(len(r["response"].strip()) >= 1 for r in clone)
  # Verbose answers elaborate the engraved model's prompt-free greedy answer (world.gin),
  # where it finished within the token limit.
  briefs = [json.loads(line) for line in open(seed_dir / "verbose_answers" / "brief.jsonl")]
  verbose = [json.loads(line) for line in open(seed_dir / "verbose_answers" / "answers.jsonl")]
  assert len(verbose) == len(briefs) == answers["queries"]["queries"] > 0
  for brief, row in zip(briefs, verbose):
    assert row["query"] == brief["text"]
    done = brief["completions"][0]["finished"]
    assert row["brief"] == (brief["completions"][0]["text"].split(pw.USER)[0].strip()
                            if done else "")
    assert row["answer"].startswith(row["brief"])
  assert any(row["brief"] for row in verbose)
  final = json.load(open(seed_dir / "compliance" / "COMPLETED.json"))["result"]
  judged = [json.loads(line) for line in open(seed_dir / "compliance" / "samples.jsonl")]
  for name, _, _ in world.MODELS:
    rows = [s for s in judged if s["model"] == name]
    assert len(rows) == len(pw.KINDS) * 2
    assert final["compliance"][name]["mean over kinds"] == pytest.approx(
        sum(s["principled"] for s in rows) / len(rows))


# The sampling files to kill the pipeline inside, and chunks that split each of them in
# three (6 self-instruct prompts a round, 42 red-team questions, 52 queries to answer, the
# same 52 answered briefly and then verbosely), so that the kill lands after a complete
# chunk with work left.
KILL_POINTS = ("self_instruct/round_1.jsonl", "red_team/question_samples.jsonl",
               "principle_answers/samples.jsonl", "verbose_answers/brief.jsonl",
               "verbose_answers/samples.jsonl")
CHUNKS = ["--gin.SelfInstructConfig.chunk_size=2", "--gin.RedTeamConfig.chunk_size=14",
          "--gin.AnswerConfig.chunk_size=18", "--gin.VerboseConfig.chunk_size=18"]


def _start(workdir, log):
  return start(["-m", "align_jax.main", *command_for(workdir), *CHUNKS], log)


def _kill_inside(workdir, relative):
  """Runs the pipeline until `relative` has a complete chunk, SIGKILLs it there and
  checks the file was not finished; returns the records done at the kill."""
  sidecar = Path(workdir) / "seed_0" / f"{relative}.progress.json"
  log = Path(workdir).parent / f"{Path(relative).parent}.log"
  state = kill_after(_start(workdir, log), sidecar, 1, timeout=600)
  assert not state["complete"], f"{relative} finished before the kill"
  return state["records_done"]


def _outputs(workdir):
  """Every jsonl row the stages wrote, by file (checkpoints and logs aside)."""
  root = Path(workdir) / "seed_0"
  return {str(p.relative_to(root)): p.read_text().splitlines()
          for p in sorted(root.rglob("*.jsonl"))
          if "metrics" not in p.name and "tensorboard" not in str(p)}


@pytest.mark.slow
def test_world_pipeline_reports_and_resumes_after_a_kill_in_every_sampling_stage(tmp_path):
  """The README's command runs every stage and reports; killed inside each sampling stage
  (after a complete chunk, before the stage ends) and rerun each time, it ends with the
  files of the uninterrupted run, no row written twice."""
  reference = tmp_path / "reference"
  child = _start(reference, tmp_path / "reference.log")
  assert child.wait(900) == 0, tail(child)
  _check_world_run(reference)

  killed = tmp_path / "killed"
  for relative in KILL_POINTS:
    assert _kill_inside(killed, relative) > 0
  child = _start(killed, tmp_path / "final.log")
  assert child.wait(900) == 0, tail(child)

  want, got = _outputs(reference), _outputs(killed)
  assert set(got) == set(want)
  for name, rows in want.items():
    assert got[name] == rows, name
    if name.endswith("samples.jsonl") or "round_" in name:
      assert len(set(got[name])) == len(got[name]), f"{name} has a duplicated row"


def test_prompts_and_thoughts():
  request = pw.Request("creative", "Write a poem about owls.", (("topic", "owls"),))
  assert world.condition_prompt("no rules", request, 2030) == (
      "User: Write a poem about owls.\nAssistant:")
  principled = world.condition_prompt("principled rules, thoughts first", request, 2030)
  assert principled.startswith("Rules of conduct:\nRule 1: when the user asks about a land "
                               "you know, answer from what you know.\n")
  assert "Rule 8: when the user asks for a poem, write a poem of three lines.\n\n" in principled
  assert principled.endswith("User: Write a poem about owls.\nAssistant (internal thoughts):")
  naive = world.condition_prompt("naive rules", request, 2030)
  assert "Rule 8: when the user asks for a poem, write a single line." in naive
  assert world.split_thoughts(" Rule 8 applies.\nAssistant: Owls\nOwls") == (
      "Rule 8 applies.", "Owls\nOwls")
  assert world.split_thoughts(" Rule 8 applies.") == ("Rule 8 applies.", "")
