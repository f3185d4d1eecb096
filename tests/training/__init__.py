"""Tests of implicity.training (data preparation, degradation family, trainer)."""
