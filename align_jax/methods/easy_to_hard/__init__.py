"""Easy-to-Hard: evaluators trained on easy problems rerank and reward hard ones."""
