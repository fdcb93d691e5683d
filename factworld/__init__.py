"""Build tool for the embedded fact-world models (neurotrace/data/models); not part of the wheel."""
