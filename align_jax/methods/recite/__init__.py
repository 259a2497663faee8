"""RECITE: recitation-augmented closed-book question answering.

A model first recites passages it memorised (sampled several times), answers from each
recitation, and the answers are combined by a plurality vote (self-consistency).
This package holds RECITE's own pieces: prompt assembly (`prompts`), the
recite-and-answer procedures over the shared sampler, and the evaluation
(`analysis`: EM/F1, the error analysis, EM as a function of the number of paths).
"""
