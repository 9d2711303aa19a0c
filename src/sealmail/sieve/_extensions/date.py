"""RFC 5260: the date and currentdate tests (with :index from section 6 on date)."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta, timezone

from sealmail.sieve._extensions.core import selected_values
from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import INDEX, MATCHING, ArgKind, Call, CheckScope, Signature, Tag

DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")
# RFC 5260 section 4.1: time-zone = ( "+" / "-" ) 4DIGIT
_ZONE = re.compile(r"[+-][0-9]{4}\Z")
_MJD_EPOCH = datetime(1858, 11, 17).date()  # section 4.2 "julian": Modified Julian Day


def _zone(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def _format_zone(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def date_part(moment: datetime, part: str) -> str:
    """Section 4.2: the text of one part of `moment` (already in the wanted zone)."""
    if part == "year":
        return f"{moment.year:04d}"
    if part == "month":
        return f"{moment.month:02d}"
    if part == "day":
        return f"{moment.day:02d}"
    if part == "date":
        return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if part == "julian":
        return str((moment.date() - _MJD_EPOCH).days)
    if part == "hour":
        return f"{moment.hour:02d}"
    if part == "minute":
        return f"{moment.minute:02d}"
    if part == "second":
        return f"{moment.second:02d}"
    if part == "time":
        return f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if part == "iso8601":
        zone = _format_zone(moment)
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f"{zone[:3]}:{zone[3:]}"
    if part == "std11":
        return email.utils.format_datetime(moment)
    if part == "zone":
        return _format_zone(moment)
    return str((moment.weekday() + 1) % 7)  # weekday: 0 is Sunday


def _parse_date(value: str) -> datetime | None:
    # Received: the date follows the last ";" (RFC 5321 section 4.4)
    text = value.rsplit(";", 1)[-1].strip() if ";" in value else value.strip()
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000": the zone is unknown, RFC 5322 section 3.3: UTC
        moment = moment.replace(tzinfo=UTC)
    return moment


def _in_zone(interp: Interpreter, call: Call, moment: datetime, original: bool) -> datetime:
    zone = interp.option_string(call, ":zone")
    if zone is not None:
        if not _ZONE.match(zone):
            raise interp.fail(f"invalid time zone {zone!r}", call)
        return moment.astimezone(_zone(zone))
    if original:
        return moment
    local = interp.run.context.now.tzinfo or UTC
    return moment.astimezone(local)


def _date(interp: Interpreter, call: Call) -> bool:
    header = interp.string(call, 0)
    part = interp.string(call, 1).lower()
    values: list[str] = []
    if part in DATE_PARTS:
        for raw in selected_values(interp, call, interp.run.message.values(header)):
            moment = _parse_date(raw)
            if moment is not None:
                moment = _in_zone(interp, call, moment, call.option_string("zone-kind") ==
                                  ":originalzone")
                values.append(date_part(moment, part))
    return interp.match(call, values, interp.strings(call, 2))


def _currentdate(interp: Interpreter, call: Call) -> bool:
    part = interp.string(call, 0).lower()
    if part not in DATE_PARTS:
        return interp.match(call, [], interp.strings(call, 1))
    moment = _in_zone(interp, call, interp.run.context.now, original=True)
    return interp.match(call, [date_part(moment, part)], interp.strings(call, 1))


def _check(call: Call, scope: CheckScope, part_index: int) -> None:
    variables = "variables" in scope.requires
    part = call.arg_string(part_index)
    if not (variables and "${" in part) and part.lower() not in DATE_PARTS:
        scope.error(call, f"{call.name}: unknown date part '{part}'")
    zone = call.option_string(":zone")
    if zone is not None and not (variables and "${" in zone) and not _ZONE.match(zone):
        scope.error(call, f"{call.name}: invalid time zone '{zone}'")


SIGNATURES = (
    Signature("date", "date",
              tags=(*MATCHING, *INDEX, Tag(":zone", ArgKind.STRING, group="zone-kind"),
                    Tag(":originalzone", group="zone-kind")),
              positional=(ArgKind.STRING, ArgKind.STRING, ArgKind.STRINGLIST),
              check=lambda call, scope: _check(call, scope, 1), run_test=_date),
    Signature("currentdate", "date",
              tags=(*MATCHING, Tag(":zone", ArgKind.STRING, group="zone-kind")),
              positional=(ArgKind.STRING, ArgKind.STRINGLIST),
              check=lambda call, scope: _check(call, scope, 0), run_test=_currentdate),
)
