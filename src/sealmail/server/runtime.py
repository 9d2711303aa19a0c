"""Event loop set-up shared by the daemons: uvloop where installed.

`SEALMAIL_EVENT_LOOP=asyncio` (or `uvloop`) picks the loop instead, so that the test suite can
run every daemon under both; asking for uvloop where it is not installed is an error, not a
silent fallback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

LOOP_VARIABLE = "SEALMAIL_EVENT_LOOP"


def run(main: Coroutine[Any, Any, None]) -> None:
    wanted = os.environ.get(LOOP_VARIABLE, "")
    if wanted not in ("", "asyncio", "uvloop"):
        main.close()
        raise SystemExit(f"{LOOP_VARIABLE}={wanted!r}: expected asyncio or uvloop")
    if wanted == "asyncio":
        asyncio.run(main)
        return
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            main.close()
            raise SystemExit(f"{LOOP_VARIABLE}=uvloop, but uvloop is not installed") from None
        asyncio.run(main)
    else:
        uvloop.run(main)
