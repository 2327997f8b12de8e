"""Peer serving runtimes, each installed into its own virtual environment.

A peer module exposes ``REQUIREMENTS`` (what its venv needs) and ``launch(...)`` which
writes the peer's files (entry script, model settings, ...) into a work folder and returns
how to start it. Peers never touch the project's own virtual environment.
"""
