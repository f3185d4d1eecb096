"""Modules shared by several test modules: fixture builders and fakes, no tests."""
