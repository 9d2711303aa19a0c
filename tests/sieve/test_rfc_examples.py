"""The example scripts of the RFCs, each run on a message chosen to take its interesting branch."""

from __future__ import annotations

import pytest
from tests.sieve.harness import ENVELOPE, MESSAGE, Trackers, execute

from sealmail.cli.sieve_test import action_json
from sealmail.sieve import Envelope

BOSS = (
    b"From: boss@example.com\r\nTo: me@example.com\r\n"
    b"Date: Tue, 30 Apr 2024 10:15:00 +0200\r\nX-Priority: 1\r\nSubject: budget\r\n\r\n"
    b"MAKE MONEY FAST, says the boss.\r\n"
)
KEEP = {"action": "keep", "flags": []}


def fileinto(mailbox: str, flags: list[str] | None = None, copy: bool = False) -> dict[str, object]:
    return {"action": "fileinto", "mailbox": mailbox, "flags": flags or [], "copy": copy,
            "create": False}


EXAMPLES = [
    # RFC 5229 section 3 and 4: variables and set modifiers
    ("rfc5229-set",
     'require ["variables", "fileinto"];\n'
     'set "honorific"  "Mr";\nset "first_name" "Wile";\nset "last_name"  "Coyote";\n'
     'set "vacation" text:\nDear ${HONORIFIC} ${last_name},\n'
     "I'm out, please leave a message after the meep.\n.\n;\n"
     'if string :matches "${vacation}" "Dear Mr Coyote,*meep.*" { fileinto "ok"; }',
     MESSAGE, ENVELOPE, [fileinto("ok")]),
    ("rfc5229-modifiers",
     'require ["variables", "fileinto"];\nset "a" "juMBlEd lETteRS";\n'
     'set :length "b" "${a}"; fileinto "${b}";\n'
     'set :lower "b" "${a}"; fileinto "${b}";\n'
     'set :upperfirst "b" "${a}"; fileinto "${b}";\n'
     'set :upperfirst :lower "b" "${a}"; fileinto "${b}";\n'
     'set :quotewildcard "b" "Rock*"; fileinto "${b}";',
     MESSAGE, ENVELOPE,
     [fileinto("15"), fileinto("jumbled letters"), fileinto("JuMBlEd lETteRS"),
      fileinto("Jumbled letters"), fileinto("Rock\\*")]),
    # RFC 5260 section 7: date and currentdate
    ("rfc5260-office-hours",
     'require ["date", "relational", "fileinto"];\n'
     'if allof(header :is "from" "boss@example.com",\n'
     '         date :value "ge" :originalzone "date" "hour" "09",\n'
     '         date :value "lt" :originalzone "date" "hour" "17")\n'
     '{ fileinto "urgent"; }',
     BOSS, ENVELOPE, [fileinto("urgent")]),
    ("rfc5260-archive-by-month",
     'require ["date", "variables", "fileinto"];\n'
     'if currentdate :matches "month" "*" { set "month" "${1}"; }\n'
     'if currentdate :matches "year"  "*" { set "year"  "${1}"; }\n'
     'fileinto "${month}-${year}";',
     MESSAGE, ENVELOPE, [fileinto("05-2024")]),
    # RFC 5230 section 7: vacation
    ("rfc5230-branches",
     'require ["vacation"];\nif header :contains "subject" "cyrus" {\n'
     '    vacation "I\'m out -- send mail to cyrus-bugs";\n} else {\n'
     '    vacation "I\'m out -- call me at +1 304 555 0123";\n}',
     MESSAGE, ENVELOPE,
     [{"action": "vacation", "subject": None, "from": None, "seconds": 604800, "mime": False,
       "reason": "I'm out -- call me at +1 304 555 0123", "sent": True,
       "to": "coyote@desert.example.org"}, KEEP]),
    ("rfc5230-addresses",
     'require "vacation";\nvacation :days 23 :addresses ["tjs@example.edu",\n'
     '                                  "ts4z@landru.example.edu"]\n'
     '"I\'m away until October 19.  If it\'s an emergency, call 911, I guess." ;',
     b"From: a@example.org\r\nTo: tjs@example.edu\r\nSubject: hi\r\n\r\nx\r\n",
     Envelope("a@example.org", "tjs@mail.example.edu"),
     [{"action": "vacation", "subject": None, "from": None, "seconds": 23 * 86400,
       "mime": False,
       "reason": "I'm away until October 19.  If it's an emergency, call 911, I guess.",
       "sent": True, "to": "a@example.org"}, KEEP]),
    # RFC 5232 section 7: imap4flags
    ("rfc5232-big-messages",
     'require ["fileinto", "imap4flags", "variables"];\n'
     'if size :over 10 {\n  addflag "MyFlags" "Big";\n'
     '  if header :is "From" "boss@example.com" { addflag "MyFlags" "\\\\Flagged"; }\n'
     '  fileinto :flags "${MyFlags}" "Big messages";\n}',
     BOSS, ENVELOPE, [fileinto("Big messages", ["\\flagged", "big"])]),
    # RFC 5173 section 7: body
    ("rfc5173-money", 'require "body";\nif body :text :contains "MAKE MONEY FAST" { discard; }',
     BOSS, ENVELOPE, [{"action": "discard"}]),
    # RFC 5231 section 7: relational
    ("rfc5231-priority",
     'require ["relational", "comparator-i;ascii-numeric", "fileinto"];\n'
     'if header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"]\n'
     '{ fileinto "Priority"; }\n'
     'elsif address :count "gt" :comparator "i;ascii-numeric" ["to"] ["5"]\n'
     '{ fileinto "SPAM"; }',
     BOSS, ENVELOPE, [fileinto("Priority")]),
    # RFC 5233 section 6: subaddress
    ("rfc5233-ken",
     'require ["envelope", "subaddress", "fileinto"];\n'
     'if envelope :user "to" "ken" {\n'
     '  if envelope :detail "to" "sieve" { fileinto "inbox.ietf-sieve"; }\n'
     '  elsif envelope :detail "to" "" { fileinto "inbox.no-detail"; }\n}',
     MESSAGE, Envelope("a@example.org", "ken+sieve@example.org"),
     [fileinto("inbox.ietf-sieve")]),
    # RFC 3894 section 4: copy
    ("rfc3894-copy", 'require ["copy", "fileinto"];\nfileinto :copy "incoming";',
     MESSAGE, ENVELOPE, [fileinto("incoming", copy=True), KEEP]),
    # RFC 5293 section 8: editheader
    ("rfc5293-addheader",
     'require ["editheader"];\nif header :contains "subject" "present" {\n'
     '  addheader "X-Source" "mailing list";\n}\n'
     'if header :is "x-source" "mailing list" { keep; }',
     MESSAGE, ENVELOPE, [KEEP]),
    # RFC 5435 section 9: enotify
    ("rfc5435-boss",
     'require ["enotify", "fileinto", "variables"];\n'
     'if header :contains "from" "boss@example.com" {\n'
     '  notify :importance "1" :message "This is probably very important"\n'
     '         "mailto:alm@example.com";\n  stop;\n}',
     BOSS, ENVELOPE,
     [{"action": "notify", "method": "mailto:alm@example.com", "from": None, "importance": 1,
       "options": [], "message": "This is probably very important"}, KEEP]),
    # RFC 7352 section 4: duplicate
    ("rfc7352-discard", 'require "duplicate";\nif duplicate { discard; }',
     MESSAGE, ENVELOPE, [KEEP]),
    # RFC 5429 section 2.1: ereject
    ("rfc5429-ereject",
     'require ["ereject"];\nif address :is "from" "coyote@desert.example.org" {\n'
     '  ereject "I am not taking mail from you, and I don\'t\n'
     'want your birdseed, either!";\n}',
     MESSAGE, ENVELOPE,
     [{"action": "ereject", "reason": "I am not taking mail from you, and I don't\r\n"
                                      "want your birdseed, either!"}]),
    # RFC 5490 section 3.1: mailboxexists
    ("rfc5490-mailboxexists",
     'require ["fileinto", "mailbox"];\n'
     'if mailboxexists "Partners" { fileinto "Partners"; } else { keep; }',
     MESSAGE, ENVELOPE, [fileinto("Partners")]),
    # RFC 5183 section 5: environment
    ("rfc5183-environment",
     'require ["environment", "fileinto"];\n'
     'if environment :matches "phase" "during" { fileinto "delivered"; }',
     MESSAGE, ENVELOPE, [fileinto("delivered")]),
]


@pytest.mark.parametrize(("script", "message", "envelope", "expected"),
                         [example[1:] for example in EXAMPLES],
                         ids=[example[0] for example in EXAMPLES])
def test_rfc_example(script: str, message: bytes, envelope: Envelope,
                     expected: list[dict[str, object]]) -> None:
    result = execute(script, message, envelope)
    assert result.error is None, result.error
    assert [action_json(action) for action in result.actions] == expected


def test_rfc6609_include_example() -> None:
    trackers = Trackers(scripts={
        ("personal", "always_allow"): 'require ["fileinto"];\n'
                                      'if address :is "from" "boss@example.com" '
                                      '{ fileinto "boss"; }',
        ("global", "spam_tests"): 'require ["reject"];\n'
                                  'if header :contains "Subject" "XXXX" { reject "spam"; }',
    })
    script = 'require ["include"];\ninclude :personal "always_allow";\ninclude :global ' \
             '"spam_tests";'
    result = execute(script, BOSS, trackers=trackers)
    assert [action_json(a) for a in result.actions] == [fileinto("boss")]
