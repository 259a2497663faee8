"""Every command in README.md and launch/README.md runs as written.

The user's workflow (vocabulary -> pretrain -> SFT -> reward model -> PPO -> generate ->
export, the Python API snippet, TensorBoard, the TPU-slice examples and the launch
scripts' commands) runs here in order, in a fresh folder holding small data files under the
names the README uses. Only `--gin.` flags that shrink steps and batch sizes are added (never
a sequence length: a length that does not fit the model must fail here as it would for a
user); paths a user would replace (`/path/to/...`, `gs://my-bucket/...`, `/shared/...`)
point at a tiny Hugging Face model and local folders. The demos' commands (quickstart and
gin/methods/*) are run by their own tests, which take them from the README through
`readme_commands.readme_command`; this file checks that each is claimed.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from align_jax import main as entry
from tests.hf_fixtures import save_tiny_llama
from tests.readme_commands import (POD, REPO, Command, align_jax_args, all_commands, gin_files,
                                   gin_value)

# The demos' commands and the tests that run them (with smaller worlds and schedules), some
# through the Colab notebook that runs the command (tests/notebooks.py).
CLAIMED = {
    "gin/quickstart.gin": "tests/methods/rlhf/test_quickstart.py",
    "gin/methods/rlhf_demo.gin": "tests/methods/rlhf/test_quickstart.py",
    "gin/methods/recite/world.gin": "tests/methods/recite/test_recite_world.py",
    "gin/methods/closed_book_qa.gin": "tests/methods/closed_book_qa/test_closed_book_qa.py",
    "gin/methods/easy_to_hard/world.gin": "tests/methods/easy_to_hard/test_world_pipeline.py",
    "gin/methods/self_align/world.gin": "tests/methods/self_align/test_self_align_world.py",
    "gin/methods/salmon/world.gin": "tests/methods/salmon/test_salmon_world.py",
}

# Per run file: the flags that shrink a documented command to a test's size.
SMALLER = {
    "gin/runs/vocabulary.gin": [],
    "gin/runs/pretrain.gin": ["--gin.STEPS=3", "--gin.DataConfig.batch_size=2",
                              "--gin.OptimizerConfig.warmup_steps=1",
                              "--gin.LoopConfig.checkpoint_every=3"],
    "gin/runs/sft.gin": ["--gin.STEPS=3", "--gin.DataConfig.batch_size=8",
                         "--gin.OptimizerConfig.warmup_steps=1",
                         "--gin.LoopConfig.checkpoint_every=3"],
    "gin/runs/reward.gin": ["--gin.STEPS=3", "--gin.DataConfig.batch_size=2",
                            "--gin.OptimizerConfig.warmup_steps=1",
                            "--gin.LoopConfig.checkpoint_every=3"],
    "gin/runs/dpo.gin": ["--gin.STEPS=3", "--gin.DataConfig.batch_size=2",
                         "--gin.OptimizerConfig.warmup_steps=1",
                         "--gin.LoopConfig.checkpoint_every=3"],
    "gin/runs/ppo.gin": ["--gin.STEPS=2", "--gin.PPOConfig.rollout_batch_size=4",
                         "--gin.PPOConfig.mini_batch_size=2", "--gin.PPOConfig.num_epochs=1",
                         "--gin.LoopConfig.checkpoint_every=2"],
    "gin/runs/generate.gin": ["--gin.SamplingConfig.max_new_tokens=8"],
    "gin/runs/export.gin": [],
    # An 8B model does not fit this host: its layout only (the documented alternative).
    "gin/runs/model_summary.gin": ["--gin.model_summary.run_model=False"],
}

# What a user replaces in the examples, and what stands in for it here.
LLAMA3_SPECIAL = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>")
PLACEHOLDERS = {
    "/path/to/Meta-Llama-3-8B": "hf/Meta-Llama-3-8B",
    "gs://my-bucket/models/Meta-Llama-3-8B": "hf/Meta-Llama-3-8B",
    "/shared/models/Meta-Llama-3-8B": "hf/Meta-Llama-3-8B",
    "gs://my-bucket/data/sft.jsonl": "sft.jsonl",
    "/shared/data/sft.jsonl": "sft.jsonl",
    "gs://my-bucket/runs/": "bucket/runs/",
    "/shared/runs/": "shared/runs/",
}

# Mesh files whose fixed axes need more devices than one CPU: run on simulated devices.
MESH_DEVICES = {"gin/mesh/h100x8.gin": 8}

INSTALL = {"python3", "pip", ".", "source", "export"}


def _words(rng: random.Random, n: int) -> str:
  syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vi", "zo", "pe", "su", "da", "go", "hu",
               "ji", "be", "fo", "wa", "xi", "yo", "qu"]
  return " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
                  for _ in range(n))


def _write_user_data(folder: Path) -> None:
  """The small files the README's commands name (text, SFT, preference and prompt data)."""
  rng = random.Random(0)
  problems = [(a, b) for a in range(30) for b in range(30)]
  rng.shuffle(problems)
  texts = [{"text": _words(rng, rng.randint(8, 30))} for _ in range(300)]
  texts += [{"text": f"{a}+{b}={a + b}. The sum of {a} and {b} is {a + b}."}
            for a, b in problems[:300]]
  sft = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a, b in problems[300:360]]
  pairs = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
           for a, b in problems[360:420]]
  prompts = [{"prompt": f"{a}+{b}="} for a, b in problems[420:436]]
  for name, rows in (("text.jsonl", texts), ("sft.jsonl", sft), ("pairs.jsonl", pairs),
                     ("prompts.jsonl", prompts)):
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _localised(args: list[str]) -> list[str]:
  out = []
  for a in args:
    for placeholder, local in PLACEHOLDERS.items():
      a = a.replace(placeholder, local)
    out.append(a)
  return out


def _runnable(command: Command) -> list[str]:
  args = align_jax_args(command)
  run_files = [f for f in gin_files(args) if f.startswith("gin/runs/")]
  assert len(run_files) == 1, f"{command}: expected one run file"
  return _localised(args) + SMALLER[run_files[0]]


def _documented() -> list[Command]:
  return [c for c in all_commands() if align_jax_args(c) is not None
          and gin_files(align_jax_args(c)) and not set(gin_files(align_jax_args(c))) & set(CLAIMED)]


def test_every_documented_command_is_run_by_a_test():
  commands = all_commands()
  assert len(commands) > 20
  for command in commands:
    args = align_jax_args(command)
    word = command.argv[0]
    if args is not None:
      claimed = set(gin_files(args)) & set(CLAIMED)
      if claimed:  # a demo: its own test (or notebook) takes this very command from README
        text = (REPO / CLAIMED[claimed.pop()]).read_text()
        gin = re.escape(gin_files(args)[0])
        assert re.search(rf'(readme_command\(|runs_readme_command\("\w+", )"{gin}"\)', text), \
            command
      else:
        assert args == ["--help"] or any(f in SMALLER for f in gin_files(args)), command
    elif word in INSTALL or word == "lint-imports" or command.argv[:3] == ("python", "-m",
                                                                            "pytest"):
      continue  # installs and the test command: .ci/run runs them in a fresh environment
    elif command.argv[:3] == POD:  # a pod of processes: its own test runs it
      assert "readme_pod_command()" in (REPO / "tests/parallel/test_pod.py").read_text()
    elif word.startswith("launch/"):
      continue  # scripts that need gcloud: test_launch_scripts_explain_themselves
    elif word == "tensorboard":
      continue  # test_user_workflow reads the events TensorBoard shows
    else:
      raise AssertionError(f"no test runs {command}")


def test_ci_runs_the_readme_test_command():
  readme = [c for c in all_commands() if c.document == "README.md"]
  tests = [c for c in readme if c.argv[:3] == ("python", "-m", "pytest")]
  ci = (REPO / ".ci/run").read_text()
  assert tests and " ".join(tests[0].argv) in ci
  assert "lint-imports" in ci and 'pip install --quiet -e ".[test]"' in ci


def test_install_extras_exist():
  setup = (REPO / "setup.py").read_text()
  for command in all_commands():
    for word in command.argv:
      for extra in re.findall(r"^\.\[(\w+)\]$", word):
        assert f'"{extra}":' in setup, f"{command}: setup.py has no extra {extra!r}"


def test_launch_scripts_explain_themselves():
  scripts = {c.argv[0] for c in all_commands() if c.argv[0].startswith("launch/")}
  scripts |= {c.argv[c.argv.index("launch/gpu/multinode.sh")] for c in all_commands()
              if "launch/gpu/multinode.sh" in c.argv}
  assert {"launch/tpu/create.sh", "launch/tpu/run.sh", "launch/gpu/multinode.sh"} <= scripts
  env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "ZONE", "TPU_NAME")}
  for script in sorted(scripts):
    out = subprocess.run(["bash", script, "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0 and "Usage" in out.stdout, (script, out.stderr)
  # Without its settings a script stops at once, naming what is missing.
  out = subprocess.run(["bash", "launch/tpu/create.sh", "--spot"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env=env)
  assert out.returncode != 0 and "PROJECT_ID" in out.stderr


def test_help_shows_the_override_form():
  help_command = next(c for c in all_commands() if align_jax_args(c) == ["--help"])
  out = subprocess.run([sys.executable, *help_command.argv[1:]], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0 and "--gin.KEY=VALUE" in out.stdout


@pytest.mark.slow
def test_user_workflow(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  _write_user_data(tmp_path)
  save_tiny_llama(tmp_path / "hf" / "Meta-Llama-3-8B", max_positions=8192,
                  extra_special_tokens=LLAMA3_SPECIAL)
  ran = []
  for command in _documented():
    args = _runnable(command)
    if args == ["--help"]:
      continue
    devices = max([MESH_DEVICES.get(f, 1) for f in gin_files(args)])
    if devices == 1:
      entry.main(args)
    else:  # a mesh for more devices than this host has: simulated CPU devices
      out = subprocess.run([sys.executable, "-m", "align_jax.main", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=900,
                           env=dict(os.environ, JAX_PLATFORMS="cpu",
                                    JAX_NUM_CPU_DEVICES=str(devices)))
      assert out.returncode == 0, (str(command), out.stderr[-3000:])
    workdir = tmp_path / gin_value(args, "WORKDIR")
    assert (workdir / "config.gin").exists(), command
    ran.append((command, workdir))
  names = [w.relative_to(tmp_path).as_posix() for _, w in ran]
  assert names[:7] == ["runs/vocab", "runs/pre", "runs/sft", "runs/reward", "runs/ppo",
                       "runs/gen", "runs/export"], names
  assert (tmp_path / "runs/vocab/spm.model").exists()
  assert (tmp_path / "runs/ppo/policy").exists()
  completions = [json.loads(line) for line in
                 (tmp_path / "runs/gen/generations.jsonl").read_text().splitlines()]
  assert len(completions) == 16
  assert (tmp_path / "runs/export/hf_export/config.json").exists()
  assert (tmp_path / "runs/dpo/checkpoints").is_dir()
  assert (tmp_path / "runs/llama3_sft/hf_export/config.json").exists()
  assert json.loads((tmp_path / "runs/summary/model_summary.json").read_text())[
      "num_params"] == 8_030_261_248
  assert (tmp_path / "bucket/runs/llama3-sft/checkpoints").exists()
  assert (tmp_path / "shared/runs/llama3-sft/checkpoints").exists()

  # The Python API snippet, run as written against the runs above.
  readme = (REPO / "README.md").read_text()
  snippet = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
  namespace: dict = {}
  exec(compile(snippet, "README.md (Python API)", "exec"), namespace)  # noqa: S102
  assert isinstance(namespace["result"].texts[0][0], str)

  # `tensorboard --logdir runs/`: every training run's scalars are in its event files.
  from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
  multiplexer = EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(tmp_path / "runs"))
  multiplexer.Reload()
  runs = multiplexer.Runs()
  for name in ("pre/tensorboard", "sft/tensorboard", "reward/tensorboard", "ppo/tensorboard"):
    assert name in runs, sorted(runs)
  # tensorboardX writes scalars, tf.summary tensors: TensorBoard plots both.
  tags = runs["pre/tensorboard"]
  assert "loss" in tags["scalars"] + tags["tensors"]
