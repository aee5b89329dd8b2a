"""RFC 9457 problem details: every error of the API is ``application/problem+json``.

``type`` is ``about:blank`` (§4.2.1: ``title`` is then the HTTP status phrase). Bad input names
the offending field in the ``invalid-params`` extension (§3.2's own example member):
``[{"name": "imsi", "reason": "..."}]``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raised by a handler; the middleware answers it as problem+json."""

    def __init__(
        self,
        status: int,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers
        self.close = close  # the connection is closed after the answer


def bad_input(field: str, detail: str) -> Problem:
    return Problem(400, f"{field}: {detail}", field)


def problem_response(p: Problem) -> web.Response:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(p.status).phrase,
        "status": p.status,
        "detail": p.detail,
    }
    if p.field is not None:
        body["invalid-params"] = [{"name": p.field, "reason": p.detail}]
    response = web.Response(
        status=p.status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=p.headers
    )
    if p.close:
        response.force_close()
    return response
