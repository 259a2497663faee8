"""Worlds: seeded synthetic testbeds with a corpus, tasks and an exact gold judge."""

from align_jax.worlds.encyclopedia import (WORLD_CONVENTION, Article, City, Company,
                                           EncyclopediaConfig, EncyclopediaWorld, Person,
                                           QAPair, build_world, judge, normalize_answer,
                                           parse_passage_hint, passage_hint)

__all__ = [
    "Article",
    "City",
    "Company",
    "EncyclopediaConfig",
    "EncyclopediaWorld",
    "Person",
    "QAPair",
    "WORLD_CONVENTION",
    "build_world",
    "judge",
    "normalize_answer",
    "parse_passage_hint",
    "passage_hint",
]
