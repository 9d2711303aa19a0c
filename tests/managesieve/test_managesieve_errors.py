"""The one mapping of script-store errors to ManageSieve responses (RFC 5804 1.3 codes)."""

from __future__ import annotations

import pytest

from sealmail.managesieve import script_error
from sealmail.store.errors import DiskFull, PermissionDenied, StoreError
from sealmail.store.sieve_scripts import (
    InvalidScriptName,
    ScriptActive,
    ScriptExists,
    ScriptNotFound,
    ScriptQuota,
)


@pytest.mark.parametrize(
    ("error", "rendered"),
    [
        (ScriptNotFound("x"), b'NO (NONEXISTENT) "x"\r\n'),
        (ScriptExists("x"), b'NO (ALREADYEXISTS) "x"\r\n'),
        (ScriptActive("x"), b'NO (ACTIVE) "x"\r\n'),
        (ScriptQuota("MAXSIZE", "x"), b'NO (QUOTA/MAXSIZE) "x"\r\n'),
        (ScriptQuota("MAXSCRIPTS", "x"), b'NO (QUOTA/MAXSCRIPTS) "x"\r\n'),
        (InvalidScriptName("x"), b'NO "x"\r\n'),
        (StoreError("disk"), b'NO (TRYLATER) "disk"\r\n'),
        (DiskFull("full"), b'NO (TRYLATER) "full"\r\n'),
        (PermissionDenied("no"), b'NO "no"\r\n'),
    ],
)
def test_script_errors_map_to_response_codes(error: StoreError, rendered: bytes) -> None:
    assert script_error(error).render() == rendered


def test_long_details_are_clipped_to_one_line() -> None:
    response = script_error(StoreError("a\r\nb " + "x" * 1000))
    assert b"\r\n" not in response.render()[:-2]
    assert len(response.text) == 300 and response.text.startswith("a b ")
