"""Simulation check of the default size law (``additive``): recovery, coverage, 10x transfer."""
