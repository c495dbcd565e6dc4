"""Helpers for tests: tiny random-weight checkpoints in the official layouts."""
