"""qshape(1): the queue's recipient (or sender) domains by age, as Postfix's qshape prints them.

Made from postqueue -j's objects (sealmail.mta.showq), so it reads the queue the same way as
mailq. The shape follows Postfix's qshape script: bucket 0 is the total; bucket i covers ages
[t*2^(i-2), t*2^(i-1)) minutes (or [t*(i-1), t*i) with -l), the last one everything older;
columns as wide as their heading or count (at least 3, one space more past two digits); the
domain column takes the rest of the terminal width (at least 18), a longer domain is cut on the
left behind `+`; domains sorted by total (most first), then by length. With `-p`, parent domains
with at least `min_subdomains` subdomains get a line of their own (`.example.com`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["QshapeOptions", "domain_counts", "render_qshape"]

DOMAIN_MIN_WIDTH = 18


@dataclass(frozen=True, slots=True)
class QshapeOptions:
    senders: bool = False  # -s
    parents: bool = False  # -p
    min_subdomains: int = 5  # -m
    buckets: int = 10  # -b
    bucket_minutes: int = 5  # -t
    linear: bool = False  # -l
    width: int = 80  # -w (only wider than 80 counts, as in Postfix)


def _bucket(arrival: float, now: float, options: QshapeOptions) -> int:
    minutes = (now - arrival) / (60 * options.bucket_minutes)
    if minutes < 1:
        return 1
    b = int(minutes + 1) if options.linear else 2 + int(math.log(minutes) / math.log(2))
    return min(b, options.buckets)


def _domain(address: str) -> str:
    address = address.lower() or "MAILER-DAEMON"
    address = address.rsplit("@", 1)[-1]
    address = address.replace("..", ".")
    found = re.fullmatch(r"\.?(.+?)\.?", address)
    return found.group(1) if found else address


def domain_counts(entries: Iterable[dict[str, Any]], now: float,
                  options: QshapeOptions = QshapeOptions()
                  ) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Counts per domain ("TOTAL" too): [total, bucket 1, ..., bucket N]; and subdomain counts
    of parent domains (for -p)."""
    counts: dict[str, list[int]] = {"TOTAL": [0] * (options.buckets + 1)}
    subdomains: dict[str, int] = {}
    for item in entries:
        b = _bucket(float(item["arrival_time"]), now, options)
        if options.senders:
            sender = str(item["sender"])
            addresses = ["" if sender == "MAILER-DAEMON" else sender]
        else:
            addresses = [str(r["address"]) for r in item["recipients"]]
        for address in addresses:
            counts["TOTAL"][0] += 1
            counts["TOTAL"][b] += 1
            domain = _domain(address)
            new = False
            while True:
                row = counts.setdefault(domain, [0] * (options.buckets + 1))
                row[0] += 1
                old = row[0] > 1
                row[b] += 1
                if new:
                    subdomains[domain] = subdomains.get(domain, 0) + 1
                new = not old
                parent = re.sub(r"^(?:\.)?[^.]+\.(.*\.)", r".\1", domain, count=1)
                if not options.parents or parent == domain:
                    break
                domain = parent
    return counts, subdomains


def _headings(totals: list[int], options: QshapeOptions) -> tuple[list[str], list[int]]:
    heads: list[str] = []
    widths: list[int] = []
    tick = 0
    heading: str = ""
    for i in range(options.buckets + 1):
        heading = "T" if i == 0 else heading
        size = max(len(str(totals[i])), len(heading))
        widths.append(size + 1 if size > 2 else 3)
        heads.append(heading)
        if i + 1 < options.buckets:
            tick += tick if (tick and not options.linear) else options.bucket_minutes
            heading = str(tick)
        else:
            heading = f"{tick}+"
    return heads, widths


def _line(domain: str, cells: list[str], widths: list[int], domain_width: int) -> str:
    if len(domain) > domain_width:
        if domain.startswith("."):
            domain = ".+" + domain[len(domain) - domain_width + 2:]
        else:
            domain = "+" + domain[len(domain) - domain_width + 1:]
    else:
        domain = domain.rjust(domain_width)
    return domain + "".join(cell.rjust(w) for cell, w in zip(cells, widths, strict=True))


def render_qshape(entries: Iterable[dict[str, Any]], now: float,
                  options: QshapeOptions = QshapeOptions()) -> str:
    counts, subdomains = domain_counts(entries, now, options)
    heads, widths = _headings(counts["TOTAL"], options)
    width = options.width if options.width > 80 else 80
    domain_width = max(DOMAIN_MIN_WIDTH, width - sum(widths))
    lines = [_line("", heads, widths, domain_width)]
    for domain in sorted(counts, key=lambda d: (-counts[d][0], len(d), d)):
        if domain.startswith(".") and subdomains.get(domain, 0) < options.min_subdomains:
            continue
        lines.append(_line(domain, [str(c) for c in counts[domain]], widths, domain_width))
    return "\n".join(lines) + "\n"
