"""Session fixtures for the real Ironic and Keystone (see realsvc.py); a pytest plugin.

Without the services venv the tests that use them are skipped, or fail when
``SOVEREIGN_REQUIRE_SERVICES=1``. A service that is installed but does not start always fails
the tests, with the end of its log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.services import realsvc
from tests.services.realsvc import IronicService, KeystoneService

T = TypeVar("T")


@dataclass(frozen=True)
class RealCloud:
    """A Keystone whose catalog lists the real Ironic as the `baremetal` service."""

    keystone: KeystoneService
    ironic: IronicService


def _services_venv() -> Path:
    venv = realsvc.services_venv()
    if realsvc.installed(venv):
        return venv
    if realsvc.required():
        pytest.fail(realsvc.NOT_INSTALLED, pytrace=False)
    pytest.skip(realsvc.NOT_INSTALLED)


def _serve(what: str, run: Callable[[], contextlib.AbstractContextManager[T]]) -> Iterator[T]:
    """Yield what `run` starts; a `ServiceError` becomes a plain test failure with its log."""
    failure: str | None = None
    with contextlib.ExitStack() as stack:
        try:
            service = stack.enter_context(run())
        except realsvc.ServiceError as err:
            failure = f"real {what}: {err}"
        if failure is not None:
            pytest.fail(failure, pytrace=False)  # outside `except`: no chained traceback
        yield service


@pytest.fixture(scope="session")
def real_ironic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IronicService]:
    """A real Ironic (fake hardware, noauth) on a free loopback port."""
    venv = _services_venv()
    yield from _serve("Ironic", lambda: realsvc.run_ironic(venv, tmp_path_factory.mktemp("ironic")))


@pytest.fixture(scope="session")
def real_keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneService]:
    """A real Keystone (SQLite, Fernet) with its bootstrap admin, on a free loopback port."""
    venv = _services_venv()
    yield from _serve("Keystone", lambda: realsvc.run_keystone(venv, tmp_path_factory.mktemp("keystone")))


@pytest.fixture(scope="session")
def real_cloud(real_keystone: KeystoneService, real_ironic: IronicService) -> RealCloud:
    """The real Keystone and Ironic, with Ironic registered in Keystone's catalog."""
    try:
        realsvc.register_endpoint(real_keystone, "baremetal", "ironic", real_ironic.url)
    except realsvc.ServiceError as err:
        failure = f"real Keystone: {err}"
    else:
        return RealCloud(keystone=real_keystone, ironic=real_ironic)
    pytest.fail(failure, pytrace=False)
