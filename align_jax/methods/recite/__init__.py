"""RECITE: recitation-augmented closed-book question answering.

A model first recites passages it memorised (sampled several times), answers from each
recitation, and the answers are combined by a plurality vote (self-consistency); with
passage hints, the distinct passages are read together in one context. This package
holds RECITE's own pieces: prompt assembly (`prompts`), the recite-and-answer procedures
and their compute-matched baselines over the shared sampler (`recite`), the evaluation
(`analysis`: EM/F1 under the dataset's convention, the error analysis, EM as a function
of the number of paths), the real-dataset readers (`data`, `evaluate`) and the
encyclopedia-world experiment (`world`).
"""
