"""Armed faults and the answers they produce (see :class:`~instaset.sandbox.model.Fault`)."""

from __future__ import annotations

import json

from aiohttp import web

from instaset.sandbox.model import Fault
from instaset.sandbox.wire import graph_error

THROTTLE_CODES = frozenset({4, 17, 32, 613, 80002})


class FaultQueue:
    """Faults in injection order; each request takes the first armed one that matches."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._left: list[int] = []

    def inject(self, fault: Fault) -> None:
        self._faults.append(fault)
        self._left.append(fault.times)

    def take(self, path_qs: str) -> Fault | None:
        """The fault for a request to ``path_qs``, consuming one of its ``times``."""
        for i, fault in enumerate(self._faults):
            if self._left[i] > 0 and fault.path_contains in path_qs:
                self._left[i] -= 1
                return fault
        return None


def fault_response(fault: Fault) -> web.Response:
    """The answer of a ``status`` or ``graph_error`` fault."""
    if fault.kind == "status" and fault.code is None:
        text = fault.message or "Service Unavailable"
        return web.Response(status=fault.status, text=text, headers=dict(fault.headers))
    code = fault.code if fault.code is not None else 2
    headers = dict(fault.headers)
    if code in THROTTLE_CODES and not headers:
        usage = {"call_count": 100, "total_cputime": 37, "total_time": 41}
        headers["X-App-Usage"] = json.dumps(usage)
    message = fault.message or (
        "Application request limit reached"
        if code in THROTTLE_CODES
        else "An unexpected error has occurred. Please retry your request later."
    )
    return graph_error(
        fault.status,
        code,
        message,
        subcode=fault.subcode,
        is_transient=True if code in (1, 2) else None,
        headers=headers,
    )
