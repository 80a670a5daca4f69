"""The papers' recipes, one module per model family: a table row per dataset, and the function
that builds a config from a row (configs/common.py says what every recipe shares)."""
