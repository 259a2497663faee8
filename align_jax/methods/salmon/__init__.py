"""SALMON: a principle-following reward model and RL steered by principles.

A judge model compares two responses under one principle at a time (`judge`); its
preferences become the training data of a reward model that reads the principles it
judges by. This package holds SALMON's own pieces as they land.
"""
