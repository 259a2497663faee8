"""Jobs that are not methods: `run` (the entry wrapper), `generate`, `export`,
`model_summary`."""
