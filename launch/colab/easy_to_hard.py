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
# # align_jax: evaluators trained on easy problems rerank hard ones
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/align-jax/align_jax/blob/main/launch/colab/easy_to_hard.ipynb)
#
# Easy-to-Hard on the *leveled math world* (`python -m align_jax.main
# --gin_file=gin/methods/easy_to_hard/world.gin`, here on one seed): two policies trained
# from scratch on gold step-by-step solutions of levels 1-3 only; a process reward model
# (PRM), an outcome reward model (ORM) and both (OPRM) trained on the small policy's own
# samples of levels 1-3, labelled by the world's exact step checker; then majority voting,
# weighted voting and best-of-N over up to 64 samples per held-out question at levels 1-3
# and at levels 4-5, which no evaluator saw; and PPO with the PRM's process reward. One seed
# took 850-970 s on two CPU cores in the committed 3-seed run.

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
WORKDIR = "align_jax_easy_to_hard"
SEEDS = (0,)  # the README's command runs (0, 1, 2)
# Extra --gin.KEY=VALUE flags, e.g. "--gin.RerankConfig.num_samples=16" (a changed setting
# needs a new WORKDIR: a stage refuses to resume under other settings).
OVERRIDES = []

# %%
from align_jax import main as entry

result = entry.main(["--gin_file=gin/methods/easy_to_hard/world.gin",
                     f"--gin.WORKDIR='{WORKDIR}'", f"--gin.SEEDS={tuple(SEEDS)}", *OVERRIDES])

# %% [markdown]
# The report leads with the goals (weighted voting with the easy-trained PRM against
# majority voting on hard questions, PRM against ORM), then accuracy against the number of
# samples and against generated tokens: the inference-compute curves.

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

display(Markdown(Path(result["report"]).read_text()))
for name in ("easy_samples", "hard_samples", "easy_tokens", "hard_tokens"):
  display(Image(filename=str(Path(WORKDIR, "report", f"{name}.png"))))

# %% [markdown]
# ## One hard question, reranked by hand
#
# The PRM scores every step of each sample; a solution's score is its weakest step (min).
# Majority voting counts answers; weighted voting sums the scores per answer; best-of-N
# takes the answer of the best-scored sample.

# %%
import numpy as np

from align_jax.data.jsonl import read_jsonl
from align_jax.rewards import ProcessRewardModel, aggregate
from align_jax.sampling.voting import best_of_n, majority_vote, weighted_majority_vote

seed_dir = Path(WORKDIR, f"seed_{SEEDS[0]}")
rows = list(read_jsonl(str(seed_dir / "samples_small" / "samples.jsonl")))
hard = [r for r in rows if r["level"] >= 4]
# A question whose samples disagree, if there is one.
row = max(hard, key=lambda r: len({s["answer"] for s in r["samples"]}))
samples = row["samples"][:8]
prm = ProcessRewardModel.load(str(seed_dir / "prm"))
scored = prm.score([row["prompt"]] * len(samples), [s["text"] for s in samples])
answers = [s["answer"] for s in samples]
scores = [aggregate(s.probabilities, "min") for s in scored]
print(row["prompt"], "\ngold answer:", row["answer"], "\n")
for sample, steps, score in zip(samples, scored, scores):
  print(f"answer {sample['answer']!s:>8} ({'right' if sample['correct'] else 'wrong'}): "
        f"step scores {np.round(steps.probabilities, 2).tolist()}, min {score:.2f}")
print("\nmajority:", majority_vote(answers), " weighted:", weighted_majority_vote(answers, scores),
      " best-of-N:", best_of_n(answers, scores))
