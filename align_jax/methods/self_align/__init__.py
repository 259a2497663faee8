"""Self-Align: principle-driven self-alignment of a base model.

A base model answers machine-written queries under a handful of principles and exemplars
whose "internal thoughts" name the principles that apply; the answers, cleaned
(`answers`), are engraved into the base model without the principles. This package holds
Self-Align's own pieces as they land.
"""
