"""Keystone's WSGI application for gunicorn; runs inside the services venv, not the project's.

Keystone parses ``sys.argv`` as its own command line when it loads its configuration, so
gunicorn's arguments must be hidden from it. The configuration file comes from
``OS_KEYSTONE_CONFIG_FILES``.
"""

import sys

sys.argv = sys.argv[:1]

from keystone.server import wsgi  # noqa: E402

application = wsgi.initialize_public_application()
