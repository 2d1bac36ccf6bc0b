"""Real external services (OpenStack Ironic and Keystone) for the tests, in their own venv."""
