"""Tests of medrl.data (a package so the tests can import builders.py)."""
