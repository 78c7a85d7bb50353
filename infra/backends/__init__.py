"""Backends: the only code that knows how a host is made.

The contract is infra/backends/base.py; infra/backends/registry.py maps a
stack's `backend` setting to one. `Endpoints` stays importable from here.
"""

from infra.backends.base import Endpoints

__all__ = ["Endpoints"]
