"""Tests of implicity.implicity_qgis (Processing provider, algorithms, plugin, desktop)."""
