"""Helpers for tests and benchmarks: tiny random-weight checkpoints in the official layouts.

Never used as a default anywhere: the library only loads what it is pointed at.
"""
