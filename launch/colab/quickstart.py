# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # align_jax: the quickstart
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/align-jax/align_jax/blob/main/launch/colab/quickstart.ipynb)
#
# The alignment loop in miniature, on one seed of the *arithmetic world* (addition problems
# with an exact gold judge): a tiny policy trained from scratch on answers with slips and
# hedges, its own samples judged into preference pairs, a reward model, then PPO against
# that reward model with the KL penalty and without, and the gold accuracy of the three
# policies on held-out problems. About five minutes on two CPU cores; GPU and TPU runtimes
# run the same code. This is the README's first command,
# `python -m align_jax.main --gin_file=gin/quickstart.gin`, run in this notebook.

# %%
# On Colab: fetch align_jax, install it with the JAX build of this runtime (CPU, GPU or TPU)
# and restart the session, so that Python loads the installed versions (numpy among them);
# then run the notebook again: this cell does nothing the second time. Elsewhere the
# align_jax already installed is used.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules and not os.path.exists("align_jax/setup.py"):
  subprocess.run("git clone -q --depth=1 https://github.com/align-jax/align_jax && PYTHON="
                 f"{sys.executable} bash align_jax/launch/colab/install.sh", shell=True, check=True)
  os.kill(os.getpid(), 9)  # the restart: run the notebook again

# %% tags=["parameters"]
# Where the run writes; running the notebook again resumes it and skips finished stages.
WORKDIR = "align_jax_quickstart"
# Extra --gin.KEY=VALUE flags, e.g. "--gin.sft/TrainingSchedule.steps=200" for a shorter
# run (a changed setting needs a new WORKDIR: a stage refuses to resume under other settings).
OVERRIDES = []

# %%
from align_jax import main as entry

results = entry.main(["--gin_file=gin/quickstart.gin", f"--gin.WORKDIR='{WORKDIR}'",
                      *OVERRIDES])

# %% [markdown]
# The report leads with PPO against SFT and with what the policy trained without the KL
# penalty does to the reward model; the curves follow.

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

display(Markdown(Path(WORKDIR, "report.md").read_text()))
for name in ("gold", "reward", "kl", "length"):
  display(Image(filename=str(Path(WORKDIR, "report", f"{name}.png"))))

# %% [markdown]
# Each policy answers a few held-out problems (greedy decoding, at most 10 new tokens as in
# PPO); the gold judge marks them.

# %%
import jax

from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl
from align_jax.methods.rlhf.pipeline import sample_and_judge
from align_jax.training import load_run

seed_dir = Path(WORKDIR, "seed_0")
problems = list(read_jsonl(str(seed_dir / "world" / "eval_prompts.jsonl")))[:8]
for policy in ("sft", "ppo", "ppo_no_kl"):
  run = load_run(str(seed_dir / policy))
  answers, right = sample_and_judge(run.sampler(), run.vocab, get_template("plain"), problems,
                                    num_samples=1, temperature=0.0, max_new_tokens=10,
                                    key=jax.random.key(0))
  print(f"{policy}:")
  for problem, answer, ok in zip(problems, answers, right):
    print(f"  {problem['prompt']!r} -> {answer[0].strip()!r}", "right" if ok[0] else "wrong")
