"""The three leadrelay services. Each is a package of the same shape and never imports another:
they talk through Kafka events only (enforced by the import-linter contract in pyproject.toml).
"""
