"""Every Self-Align stage resumes after SIGKILL without duplicating a row: the pipeline
is killed inside each sampling stage (after a complete chunk, before the stage ends),
rerun each time, and its files end up equal to those of an uninterrupted run."""

from pathlib import Path

from tests.methods.self_align.test_self_align_world import command_for
from tests.process_fixtures import kill_after, start, tail

# The sampling files to kill the pipeline inside, and chunks that split each of them in
# three (6 self-instruct prompts a round, 42 red-team questions, 52 queries to answer), so
# that the kill lands after a complete chunk with work left.
KILL_POINTS = ("self_instruct/round_1.jsonl", "red_team/question_samples.jsonl",
               "principle_answers/samples.jsonl", "verbose_answers/samples.jsonl")
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


def test_killed_in_every_sampling_stage_the_pipeline_ends_as_an_uninterrupted_run(tmp_path):
  reference = tmp_path / "reference"
  child = _start(reference, tmp_path / "reference.log")
  assert child.wait(900) == 0, tail(child)

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
