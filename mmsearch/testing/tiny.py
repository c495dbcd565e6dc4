"""Tiny random-weight checkpoints for tests, each written in its model's official layout."""

from mmsearch.testing.tiny_phi3v import write_tiny_phi3v

__all__ = ["write_tiny_phi3v"]
