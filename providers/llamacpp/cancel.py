"""Cooperative cancellation: pulls and generations check the caller's event between steps."""

from __future__ import annotations

import threading

from ..errors import Cancelled
from .ids import BACKEND


def check_cancel(operation: str, model_id: str, cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` ("pull of ID interrupted") once ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{operation} {model_id} interrupted", model=model_id, backend=BACKEND)
