"""Headless training: data preparation, the degradation family, the trainer and the held-out protocol."""
