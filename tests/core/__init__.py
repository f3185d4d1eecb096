"""Tests of implicity.core (geodata I/O, gridding, evaluation, the network, reconstruction)."""
