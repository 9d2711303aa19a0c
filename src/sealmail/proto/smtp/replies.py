"""SMTP/LMTP replies: a code, an RFC 3463 enhanced status code, and one or more lines of text."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reply"]

# RFC 3463 2: status-code = class "." subject "." detail; class = "2"/"4"/"5";
# subject = 1*3digit; detail = 1*3digit.
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply. `text` as a tuple makes a multi-line reply (RFC 5321 4.2.1)."""

    code: int
    enhanced: str | None = None
    text: str | tuple[str, ...] = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} is not in 200..599")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"enhanced status code {self.enhanced!r} is malformed")
            # RFC 3463 3.1: the class sub-code says success, persistent or permanent failure,
            # which must agree with the basic reply code.
            if self.enhanced[0] != str(self.code)[0]:
                raise ValueError(
                    f"enhanced status code {self.enhanced} does not match reply code {self.code}"
                )
        for line in self.lines:
            if "\r" in line or "\n" in line:
                # A line end in the text would let it forge further replies.
                raise ValueError("reply text must not hold CR or LF")

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else (self.text or ("",))

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    def render(self, enhanced: bool = True) -> bytes:
        """Wire form: "250-first", ..., "250 last", each ended by CRLF.

        RFC 2034 3: the enhanced code is "present in all 2xx, 4xx, and 5xx response lines other
        than initial greeting and any response to HELO or EHLO"; callers pass enhanced=False
        there, and such replies are built with enhanced=None anyway.
        """
        prefix = f"{self.enhanced} " if enhanced and self.enhanced else ""
        lines = self.lines
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            body = f"{prefix}{line}" if (prefix and line) else (prefix.rstrip() or line)
            out.append(f"{self.code}{sep}{body}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8")
