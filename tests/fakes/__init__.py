"""Fake external services for tests: LLM APIs on 127.0.0.1 speaking the real wire formats.

Use the servers as context managers, or their fixtures (`fake_anthropic`,
`fake_openai`) by importing them into a conftest.py.
"""
