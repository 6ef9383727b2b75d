"""ALOE-kit core library: model backends, records, prompts, cache and metrics shared by every stage."""

__version__ = "0.1.0"
