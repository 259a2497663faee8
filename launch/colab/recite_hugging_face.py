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
# # align_jax: RECITE with a Hugging Face model on HotpotQA
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/align-jax/align_jax/blob/main/launch/colab/recite_hugging_face.ipynb)
#
# Recitation-augmented answering with an open-weight model loaded from its Hugging Face
# safetensors: for each two-hop HotpotQA question the model recites what it remembers
# about each hop, then answers from its own recitations; direct answers and chain of
# thought, greedy and self-consistent over the same number of sampled paths, are the
# baselines. Answers are scored as HotpotQA's official script scores them. Use a GPU or
# TPU runtime: every question takes several hundred sampled tokens per method.

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
WORKDIR = "align_jax_recite_hotpotqa"
# A Hugging Face model id (downloaded here) or a local directory holding config.json,
# *.safetensors and the tokenizer; a Llama-family architecture (Llama, Mistral, Qwen2, Gemma).
MODEL = "Qwen/Qwen2-0.5B"
# HotpotQA's dev set (distractor setting), downloaded when it is not here yet.
HOTPOTQA_DEV = "hotpot_dev_distractor_v1.json"
HOTPOTQA_URL = "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json"
QUESTIONS = 32  # the first QUESTIONS dev questions
PATHS = 4  # sampled paths per question for every self-consistent method
OVERRIDES = []  # extra --gin.KEY=VALUE flags

# %%
import urllib.request

if not os.path.isdir(MODEL):
  from huggingface_hub import snapshot_download
  MODEL = snapshot_download(MODEL, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                   "*.txt"])
if not os.path.exists(HOTPOTQA_DEV):
  urllib.request.urlretrieve(HOTPOTQA_URL, HOTPOTQA_DEV)

# %%
from align_jax import main as entry

scores = entry.main(["--gin_file=gin/methods/recite/hotpotqa.gin", f"--gin.WORKDIR='{WORKDIR}'",
                     f"--gin.CHECKPOINT='{MODEL}'", f"--gin.HOTPOTQA_DEV='{HOTPOTQA_DEV}'",
                     f"--gin.recite_eval.limit={QUESTIONS}",
                     f"--gin.ReciteConfig.num_paths={PATHS}", *OVERRIDES])

# %% [markdown]
# Exact match and F1 per method, and the exact match of a vote over k of the paths (mean and
# spread over random draws of k).

# %%
import matplotlib.pyplot as plt

for method, entry_scores in scores.items():
  print(f"{method:>22}: EM {entry_scores['em']:.3f}  F1 {entry_scores['f1']:.3f}  "
        f"(n={entry_scores['n']})")
for method, entry_scores in scores.items():
  curve = entry_scores["em_by_paths"]
  plt.errorbar([c["paths"] for c in curve], [c["em_mean"] for c in curve],
               yerr=[c["em_std"] for c in curve], marker="o", capsize=3, label=method)
plt.xscale("log", base=2)
plt.xlabel("paths voted")
plt.ylabel("exact match")
plt.legend()
plt.show()

# %% [markdown]
# What the model recited on the first questions, and what it answered.

# %%
from align_jax.data.jsonl import read_jsonl

for row in list(read_jsonl(os.path.join(WORKDIR, "multi_recite.jsonl")))[:3]:
  print("Q:", row["question"], "| gold:", row["answers"])
  for number, recitation in enumerate(row["paths"][0]["recitations"], 1):
    print(f"  recitation {number}: {recitation}")
  print("  first path's answer:", row["paths"][0]["answer"])
  print("  voted answer:", row["prediction"], "\n")
