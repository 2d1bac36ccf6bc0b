"""Shared pytest setup: plugins that provide fixtures to the whole suite."""

pytest_plugins = ["tests.services.fixtures"]
