"""Shared fixtures. Lab-backed tests bring one lab rack up per test module (see tests/lab.py)."""
