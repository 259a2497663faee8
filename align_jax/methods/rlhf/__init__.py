"""The RLHF demo: SFT -> preferences -> reward model -> PPO on the arithmetic world."""

from align_jax.methods.rlhf.pipeline import rlhf_demo
