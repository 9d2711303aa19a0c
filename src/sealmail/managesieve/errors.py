"""The one place where script-store errors become ManageSieve responses (RFC 5804 1.3 codes).

sealmail.store.errors asks each protocol to map them once; SASL failures are the core's own
(sealmail.proto.managesieve.sasl_failure), since they need nothing of the store.
"""

from __future__ import annotations

from sealmail.proto.managesieve import NO, Response, ResponseCode
from sealmail.store.errors import StoreError
from sealmail.store.sieve_scripts import (
    InvalidScriptName,
    ScriptActive,
    ScriptExists,
    ScriptNotFound,
    ScriptQuota,
)

__all__ = ["script_error"]


def _detail(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def script_error(exc: StoreError) -> Response:
    """The NO for a refused script operation."""
    if isinstance(exc, ScriptNotFound):
        return NO(_detail(exc), ResponseCode.NONEXISTENT)
    if isinstance(exc, ScriptExists):
        return NO(_detail(exc), ResponseCode.ALREADYEXISTS)
    if isinstance(exc, ScriptActive):
        return NO(_detail(exc), ResponseCode.ACTIVE)
    if isinstance(exc, ScriptQuota):
        code = (
            ResponseCode.QUOTA_MAXSIZE if exc.kind == "MAXSIZE" else ResponseCode.QUOTA_MAXSCRIPTS
        )
        return NO(_detail(exc), code)
    if isinstance(exc, InvalidScriptName):
        return NO(_detail(exc))
    if exc.temporary:
        return NO(_detail(exc), ResponseCode.TRYLATER)
    return NO(_detail(exc))
