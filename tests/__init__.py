"""The test suite: tests/core, tests/training and tests/qgis mirror the packages; helpers in tests/helpers."""
