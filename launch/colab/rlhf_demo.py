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
# # align_jax: a reward model and PPO against it
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/align-jax/align_jax/blob/main/launch/colab/rlhf_demo.ipynb)
#
# The RLHF demo (`python -m align_jax.main --gin_file=gin/methods/rlhf_demo.gin`) on the
# arithmetic world, over seeds: SFT of a tiny policy, a Bradley-Terry reward model trained
# on (right, wrong) pairs of the policy's own samples, PPO against it with the KL penalty and
# without. Then a look inside: how the reward model scores right and wrong answers, and
# what PPO does to reward and KL. Each seed runs longer schedules than the quickstart's
# (1,200 SFT steps, 150 reward-model steps, 40 PPO iterations): three seeds took 644 s on
# two CPU cores with the programs already in the compilation cache.

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
WORKDIR = "align_jax_rlhf_demo"
SEEDS = (0, 1)  # the README's command runs (0, 1, 2)
# Extra --gin.KEY=VALUE flags, e.g. "--gin.PPOConfig.kl_coef=0.1" (a changed setting needs a
# new WORKDIR: a stage refuses to resume under other settings).
OVERRIDES = []

# %%
from align_jax import main as entry

results = entry.main(["--gin_file=gin/methods/rlhf_demo.gin", f"--gin.WORKDIR='{WORKDIR}'",
                      f"--gin.SEEDS={tuple(SEEDS)}", *OVERRIDES])

# %%
from pathlib import Path

from IPython.display import Markdown, display

display(Markdown(Path(WORKDIR, "report.md").read_text()))

# %% [markdown]
# ## Inside the reward model
#
# The reward model scores the SFT policy's own samples on the RL prompts; its scores are
# normalised to mean 0 and standard deviation 1 over those samples. A useful reward model
# puts the answers the gold judge accepts above those it rejects.

# %%
import matplotlib.pyplot as plt
import numpy as np

from align_jax.data.jsonl import read_jsonl
from align_jax.parallel import create_mesh
from align_jax.rewards import RewardContext, RewardModelTerm, text_input
from align_jax.rewards.reward_model import batch_from_records

seed_dir = Path(WORKDIR, f"seed_{SEEDS[0]}")
judged = list(read_jsonl(str(seed_dir / "preferences" / "judged_samples.jsonl")))
samples = [{"prompt": row["prompt"], "response": response, "correct": correct}
           for row in judged for response, correct in zip(row["responses"], row["correct"])]
term = RewardModelTerm(str(seed_dir / "reward"), input_builder=text_input("plain"))
term.setup(RewardContext(mesh=create_mesh()))
scores = np.asarray(term(batch_from_records(samples)))
right = np.array([s["correct"] for s in samples])
print(f"{len(samples)} samples, {right.mean():.0%} right; mean score right "
      f"{scores[right].mean():.2f}, wrong {scores[~right].mean():.2f}")
plt.hist([scores[right], scores[~right]], bins=30, label=["right", "wrong"])
plt.xlabel("normalised reward")
plt.legend()
plt.show()

# %% [markdown]
# ## PPO with and without the KL penalty
#
# Without the penalty the policy drifts further from the SFT policy (KL) and collects more
# reward from the reward model, which the gold judge does not follow.

# %%
from align_jax.training import read_metrics

figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for stage in ("ppo", "ppo_no_kl"):
  rows = [r for r in read_metrics(str(seed_dir / stage / "metrics.jsonl")) if "loss" in r]
  steps = [r["step"] for r in rows]
  axes[0].plot(steps, [r["objective/score"] for r in rows], label=stage)
  axes[1].plot(steps, [r["objective/kl"] for r in rows], label=stage)
axes[0].set_title("reward-model score")
axes[1].set_title("KL to the SFT policy")
for axis in axes:
  axis.set_xlabel("PPO iteration")
  axis.legend()
plt.show()
