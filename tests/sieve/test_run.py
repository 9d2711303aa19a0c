"""Running scripts: implicit keep, merging, conflicts, limits, and each extension's behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.sieve.harness import ENVELOPE, MESSAGE, Trackers, execute

from sealmail.sieve import (
    DEFAULT_CACHE,
    Discard,
    DuplicateMark,
    Envelope,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    ScriptCache,
    SieveCompileError,
    SieveLimits,
    Vacation,
    compose_vacation_reply,
)
from sealmail.sieve._message import MessageView


def actions(text: str, **kwargs: object) -> list[object]:
    result = execute(text, **kwargs)  # type: ignore[arg-type]
    assert result.error is None, result.error
    return list(result.actions)


# --- RFC 5228 core ----------------------------------------------------------------------------
def test_empty_script_keeps() -> None:
    assert actions("") == [Keep(implicit=True)]


def test_discard_cancels_implicit_keep_only() -> None:
    assert actions("discard;") == [Discard()]
    assert actions("keep; discard;") == [Keep(), Discard()]


def test_stop_ends_the_script() -> None:
    assert actions("stop; discard;") == [Keep(implicit=True)]


def test_fileinto_inbox_is_keep_and_duplicates_merge() -> None:
    script = 'require "fileinto"; fileinto "INBOX"; keep; fileinto "a"; fileinto "a";'
    assert actions(script) == [Keep(), FileInto("a")]


def test_copy_leaves_implicit_keep() -> None:
    script = 'require ["copy", "fileinto"]; fileinto :copy "a"; redirect :copy "x@example.com";'
    assert actions(script) == [FileInto("a", copy=True), Redirect("x@example.com", copy=True),
                               Keep(implicit=True)]


def test_redirect_strips_angle_brackets_and_merges() -> None:
    assert actions('redirect "<x@example.com>"; redirect "X@example.com";') == [
        Redirect("x@example.com")]


def test_header_tests_decode_rfc2047_and_compare_case_insensitively() -> None:
    message = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nx\r\n"
    assert actions('if header :is "SUBJECT" "CAFé" { discard; }', message=message) == [
        Discard()]
    assert actions('if header :comparator "i;octet" :is "subject" "CAFé" { discard; }',
                   message=message) == [Keep(implicit=True)]


def test_address_parts_and_envelope_null_sender() -> None:
    assert actions('if address :localpart "from" "COYOTE" { discard; }') == [Discard()]
    script = 'require "envelope"; if envelope :domain "from" "" { discard; }'
    assert actions(script, envelope=Envelope("", "me@example.com")) == [Discard()]


def test_exists_requires_all_and_size() -> None:
    assert actions('if exists ["From", "X-None"] { discard; }') == [Keep(implicit=True)]
    assert actions(f'if size :under {len(MESSAGE) + 1} {{ discard; }}') == [Discard()]
    assert actions(f'if size :over {len(MESSAGE)} {{ discard; }}') == [Keep(implicit=True)]


def test_comparators() -> None:
    script = ('require ["relational", "comparator-i;ascii-numeric"];'
              'if header :value "gt" :comparator "i;ascii-numeric" "x-n" "9" { discard; }')
    assert actions(script, message=b"X-N: 10\r\n\r\n") == [Discard()]
    # a value without leading digits is positive infinity (RFC 4790 section 9.1)
    assert actions(script, message=b"X-N: none\r\n\r\n") == [Discard()]
    assert actions(script, message=b"X-N: 09\r\n\r\n") == [Keep(implicit=True)]


def test_matches_wildcards_and_escapes() -> None:
    assert actions('if header :matches "subject" "I ?ave*pres\\\\*" { discard; }') == [
        Keep(implicit=True)]
    assert actions('if header :matches "subject" "I ?ave*pres*" { discard; }') == [Discard()]
    message = b"Subject: a*b\r\n\r\n"
    assert actions('if header :matches "subject" "a\\\\*b" { discard; }', message=message) == [
        Discard()]


# --- runtime errors: the implicit keep, never lost mail ---------------------------------------
@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "reject"; fileinto_absent;', None),
        ('require "reject"; keep; reject "no";', "reject conflicts with an earlier keep action"),
        ('require "reject"; reject "no"; redirect "a@example.com";',
         "redirect conflicts with an earlier reject action"),
        ('require "vacation"; vacation "a"; vacation :handle "b" "b";',
         "only one vacation action may run per message"),
    ],
)
def test_runtime_errors_keep_the_message(script: str, error: str | None) -> None:
    if error is None:
        with pytest.raises(SieveCompileError):
            execute(script)
        return
    result = execute(script)
    assert result.actions == (Keep(implicit=True),)
    assert result.error is not None and error in str(result.error)
    assert result.error.line == 1


def test_limits_on_actions_and_redirects() -> None:
    script = "".join(f'redirect "u{i}@example.com";' for i in range(5))
    result = execute(script, limits=SieveLimits(max_redirects=4))
    assert result.actions == (Keep(implicit=True),)
    assert "more than 4 redirects" in str(result.error)
    result = execute("keep;" * 5, limits=SieveLimits(max_actions=3))
    assert "more than 3 actions" in str(result.error)


def test_reject_and_ereject() -> None:
    assert actions('require "reject"; reject "no";') == [Reject("no")]
    assert actions('require "ereject"; ereject "no";') == [Ereject("no")]


# --- variables (RFC 5229) ---------------------------------------------------------------------
def test_set_modifiers_by_precedence() -> None:
    script = ('require ["variables", "fileinto"];'
              'set :upperfirst :lower "a" "HELLO World";'
              'set :length "n" "${a}";'
              'set :quotewildcard "q" "a*b?";'
              'fileinto "${a}-${n}-${q}-${unknown}";')
    assert actions(script) == [FileInto("Hello world-11-a\\*b\\?-")]


def test_string_test_and_match_variables() -> None:
    script = ('require ["variables", "fileinto"];'
              'if string :matches "${unknown}x" "*x" { set "m" "[${0}|${1}]"; }'
              'if string :is "${m}" "[x|]" { fileinto "ok"; }')
    assert actions(script) == [FileInto("ok")]


def test_variable_namespaces_are_case_insensitive() -> None:
    script = 'require ["variables", "fileinto"]; set "Name" "v"; fileinto "${NAME}";'
    assert actions(script) == [FileInto("v")]


def test_failed_match_keeps_old_match_variables() -> None:
    script = ('require ["variables", "fileinto"];'
              'if header :matches "subject" "I *" {}'
              'if header :matches "subject" "Nope*" {}'
              'fileinto "${1}";')
    assert actions(script) == [FileInto("have a present for you")]


# --- imap4flags (RFC 5232) --------------------------------------------------------------------
def test_flags_in_variables_and_internal_variable() -> None:
    script = ('require ["imap4flags", "variables", "fileinto"];'
              'addflag "mine" ["\\\\Seen", "Work"]; removeflag "mine" "work";'
              'fileinto :flags "${mine}" "a"; addflag "\\\\Flagged"; keep;')
    assert actions(script) == [FileInto("a", ("\\seen",)), Keep(("\\flagged",))]


# --- vacation (RFC 5230, RFC 6131) ------------------------------------------------------------
def vacation_of(result_actions: list[object]) -> Vacation:
    (found,) = [a for a in result_actions if isinstance(a, Vacation)]
    return found


def test_vacation_sent_and_tracked() -> None:
    script = 'require "vacation"; vacation :days 2 :subject "Away" "Back soon.";'
    reply = vacation_of(actions(script))
    assert (reply.sent, reply.to, reply.seconds) == (True, ENVELOPE.sender, 2 * 86400)
    trackers = Trackers(answered={(reply.tracking_key, ENVELOPE.sender)})
    again = vacation_of(actions(script, trackers=trackers))
    assert not again.sent and again.to is None
    # a different reason is a different response (RFC 5230 section 4.2)
    other = vacation_of(actions(script.replace("Back soon.", "Gone."), trackers=trackers))
    assert other.sent and other.tracking_key != reply.tracking_key


@pytest.mark.parametrize(
    ("header", "sender", "why"),
    [
        (b"Auto-Submitted: auto-replied\r\n", "coyote@desert.example.org", "automatically"),
        (b"Precedence: bulk\r\n", "coyote@desert.example.org", "bulk"),
        (b"List-Id: <x.example.org>\r\n", "coyote@desert.example.org", "mailing list"),
        (b"", "MAILER-DAEMON@desert.example.org", "mailer daemon"),
        (b"", "owner-list@desert.example.org", "list"),
        (b"", "roadrunner@acme.example.com", "the sender is the user"),
        (b"", "", "null sender"),
    ],
)
def test_vacation_never_answers(header: bytes, sender: str, why: str) -> None:
    message = header + MESSAGE
    reply = vacation_of(actions('require "vacation"; vacation "x";', message=message,
                                envelope=Envelope(sender, ENVELOPE.recipient)))
    assert not reply.sent and why in (reply.why_not_sent or "")


def test_vacation_needs_the_user_among_recipients() -> None:
    envelope = Envelope(ENVELOPE.sender, "other@acme.example.com")
    script = 'require "vacation"; vacation "x";'
    assert not vacation_of(actions(script, envelope=envelope)).sent
    with_addresses = 'require "vacation"; vacation :addresses "roadrunner@acme.example.com" "x";'
    assert vacation_of(actions(with_addresses, envelope=envelope)).sent


def test_vacation_seconds_and_clamps() -> None:
    script = 'require ["vacation", "vacation-seconds"]; vacation :seconds 30 "x";'
    assert vacation_of(actions(script)).seconds == 30
    assert vacation_of(actions('require "vacation"; vacation :days 0 "x";')).seconds == 86400
    assert vacation_of(actions('require "vacation"; vacation :days 9999 "x";')).seconds == (
        90 * 86400)


# --- include (RFC 6609) -----------------------------------------------------------------------
def test_include_personal_and_global_with_globals_and_return() -> None:
    trackers = Trackers(scripts={
        ("personal", "lists"): 'require ["variables", "include", "fileinto"]; global "box";'
                               'fileinto "${box}"; return; discard;',
        ("global", "spam"): 'require "fileinto"; fileinto "Junk";',
    })
    script = ('require ["include", "variables"]; global "box"; set "box" "Lists";'
              'include :personal "lists"; include :global "spam"; include :once :global "spam";')
    assert actions(script, trackers=trackers) == [FileInto("Lists"), FileInto("Junk")]


def test_include_optional_missing_loop_and_depth() -> None:
    assert actions('require "include"; include :optional "none";') == [Keep(implicit=True)]
    result = execute('require "include"; include "none";')
    assert "does not exist" in str(result.error)
    loop = Trackers(scripts={("personal", "a"): 'require "include"; include "b";',
                             ("personal", "b"): 'require "include"; include "a";'})
    result = execute('require "include"; include "a";', trackers=loop)
    assert "include loop" in str(result.error) and result.actions == (Keep(implicit=True),)
    broken = Trackers(scripts={("personal", "bad"): "nonsense;"})
    result = execute('require "include"; include "bad";', trackers=broken)
    assert "does not compile" in str(result.error)
    chain = Trackers(scripts={("personal", f"s{i}"): f'require "include"; include "s{i + 1}";'
                              for i in range(20)})
    result = execute('require "include"; include "s0";', trackers=chain,
                     limits=SieveLimits(max_include_depth=5))
    assert "nested deeper than 5" in str(result.error)


def test_stop_in_included_script_stops_everything() -> None:
    trackers = Trackers(scripts={("personal", "s"): "stop;"})
    assert actions('require "include"; include "s"; discard;', trackers=trackers) == [
        Keep(implicit=True)]


# --- duplicate (RFC 7352) ---------------------------------------------------------------------
def test_duplicate_marks_and_tracker() -> None:
    script = 'require "duplicate"; if duplicate { discard; }'
    result = execute(script)
    assert result.actions == (Keep(implicit=True),)
    (mark,) = result.duplicate_marks
    assert isinstance(mark, DuplicateMark) and mark.seconds == 7 * 86400
    again = execute(script, trackers=Trackers(seen_keys={mark.key}))
    assert again.actions == (Discard(),) and again.duplicate_marks == ()
    refreshed = execute('require "duplicate"; if duplicate :last :seconds 60 { discard; }',
                        trackers=Trackers(seen_keys={mark.key}))
    assert refreshed.duplicate_marks == (DuplicateMark(mark.key, 60),)


def test_duplicate_handles_and_missing_message_id() -> None:
    first = execute('require "duplicate"; if duplicate :handle "a" {}').duplicate_marks[0]
    second = execute('require "duplicate"; if duplicate :handle "b" {}').duplicate_marks[0]
    assert first.key != second.key
    result = execute('require "duplicate"; if duplicate { discard; }',
                     message=b"Subject: x\r\n\r\n")
    assert result.actions == (Keep(implicit=True),) and result.duplicate_marks == ()
    two = execute('require "duplicate"; if duplicate :uniqueid "x" {} '
                  'if duplicate :uniqueid "x" { discard; }')
    assert two.actions == (Discard(),)


# --- editheader (RFC 5293) --------------------------------------------------------------------
def test_editheader_changes_the_carried_message() -> None:
    script = ('require ["editheader", "fileinto"];'
              'addheader "X-Sieve" "filtered"; deleteheader "Return-Path";'
              'fileinto "a";')
    (action,) = actions(script)
    assert isinstance(action, FileInto) and action.message is not None
    edited = MessageView(action.message)
    assert edited.headers[0] == ("X-Sieve", " filtered\r\n")
    assert not edited.has("return-path") and edited.raw_body().startswith("Look")


def test_deleteheader_index_and_patterns() -> None:
    message = b"X-A: one\r\nX-A: two\r\nX-A: three\r\n\r\nbody\r\n"
    script = ('require ["editheader", "variables"];'
              'deleteheader :index 1 :last "X-A"; deleteheader :contains "X-A" "ne";'
              'if header :is "x-a" "two" { discard; }')
    assert actions(script, message=message) == [Discard()]


def test_protected_headers_are_left_alone_without_a_compile_error() -> None:
    """RFC 5293 section 7: a change to a protected field is silently ignored."""
    message = b"Received: from a\r\nAuto-Submitted: no\r\nX-A: 1\r\n\r\nbody\r\n"
    script = ('require ["editheader", "fileinto"]; deleteheader "received";'
              'deleteheader "Auto-Submitted"; addheader "Received" "from b";'
              'deleteheader "X-A"; fileinto "INBOX.x";')
    [action] = actions(script, message=message)
    assert isinstance(action, FileInto) and action.message is not None
    edited = MessageView(action.message)
    assert [name for name, _ in edited.headers] == ["Received", "Auto-Submitted"]


# --- date (RFC 5260), environment (RFC 5183), index ------------------------------------------
def test_currentdate_uses_the_injected_clock() -> None:
    script = ('require ["date", "relational"];'
              'if allof (currentdate "date" "2024-05-01", currentdate :zone "+0200" "hour" "14",'
              ' currentdate :value "ge" "iso8601" "2024-05-01T12:30:15+00:00") { discard; }')
    assert actions(script) == [Discard()]


def test_environment_items() -> None:
    script = ('require "environment";'
              'if allof (environment "name" "sealmail", environment "domain" "example.com",'
              ' environment :contains "location" "MDA") { discard; }')
    assert actions(script, environment={"domain": "example.com"}) == [Discard()]


def test_index_picks_one_header_field() -> None:
    message = b"Received: from a\r\nReceived: from b\r\nReceived: from c\r\n\r\n"
    script = ('require "index";'
              'if allof (header :index 2 "received" "from b",'
              ' header :index 1 :last "received" "from c") { discard; }')
    assert actions(script, message=message) == [Discard()]


# --- mailbox (RFC 5490) -----------------------------------------------------------------------
def test_mailboxexists_and_fallback() -> None:
    script = ('require ["fileinto", "mailbox"];'
              'if mailboxexists "Work" { fileinto "Work"; } fileinto "Gone";'
              'fileinto :create "New";')
    assert actions(script, mailboxes={"Work"}) == [
        FileInto("Work"), Keep(fallback_from="Gone"), FileInto("New", create=True)]


# --- enotify (RFC 5435, RFC 5436) -------------------------------------------------------------
def test_notify_mailto() -> None:
    script = ('require ["enotify", "variables"];'
              'if valid_notify_method "mailto:me@example.com" {'
              ' set :encodeurl "s" "a b&c";'
              ' notify :importance "1" :message "new: ${s}" "mailto:me@example.com"; }'
              'if notify_method_capability "mailto:me@example.com" "online" "maybe" { stop; }')
    assert actions(script) == [
        Notify("mailto:me@example.com", None, 1, (), "new: a%20b%26c"), Keep(implicit=True)]
    with pytest.raises(SieveCompileError, match="unsupported or invalid method"):
        execute('require "enotify"; notify "xmpp:me@example.com";')


# --- regex (draft-ietf-sieve-regex) and its bounds --------------------------------------------
def test_regex_catastrophic_pattern_is_linear() -> None:
    message = b"Subject: " + b"a" * 3000 + b"\r\n\r\n"
    script = 'require "regex"; if header :regex "subject" "^(a|aa)*(a*)*$" { discard; }'
    assert actions(script, message=message) == [Discard()]
    script = 'require "regex"; if header :regex "subject" "^(a*)*b$" { discard; }'
    assert actions(script, message=message) == [Keep(implicit=True)]


def test_regex_limits() -> None:
    with pytest.raises(SieveCompileError, match="too complex"):
        execute('require "regex"; if header :regex "s" "(((a{1,100}){1,100}){1,100})" {}')
    message = b"Subject: " + b"a" * 2000 + b"\r\n\r\n"
    result = execute('require "regex"; if header :regex "subject" "(a|b)*c" { discard; }',
                     message=message, limits=SieveLimits(max_regex_steps=1000))
    assert result.actions == (Keep(implicit=True),) and "too many steps" in str(result.error)


def test_regex_case_and_captures() -> None:
    script = ('require ["regex", "variables", "fileinto"];'
              'if address :regex :domain "from" "^([^.]+)\\\\.EXAMPLE\\\\.org$" '
              '{ fileinto "${1}"; }')
    assert actions(script) == [FileInto("desert")]


# --- the cache --------------------------------------------------------------------------------
def test_cache_compiles_once_per_text() -> None:
    cache = ScriptCache(max_entries=2)
    first = cache.compile("keep;")
    assert cache.compile("keep;") is first and (cache.hits, cache.misses) == (1, 1)
    cache.compile("discard;")
    cache.compile("stop;")
    assert len(cache) == 2 and cache.compile("keep;") is not first
    assert DEFAULT_CACHE.compile("keep;").sha256 == first.sha256


# --- body :content, :matches bounds, and robustness on any message --------------------------
MULTIPART = (
    b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aMOpbGxvIHdvcmxk\r\n"
    b"--b\r\nContent-Type: application/pdf\r\n\r\n%PDF invoice\r\n--b--\r\n"
)


def test_body_content_types_and_decoding() -> None:
    script = ('require ["body", "fileinto"];'
              'if body :content "text/plain" :contains "héllo" { fileinto "text"; }'
              'if body :content "application" :contains "invoice" { fileinto "pdf"; }'
              'if body :text :contains "invoice" { fileinto "wrong"; }')
    assert actions(script, message=MULTIPART) == [FileInto("text"), FileInto("pdf")]


def test_matches_on_a_huge_value_is_a_runtime_error_not_a_hang() -> None:
    message = b"Subject: " + b"x" * 200_000 + b"\r\n\r\n"
    script = 'if header :matches "subject" "*a*b*c*d*e*f*g*h*i*j*k*l*m*n*o*p*q*r*s*t*" {}'
    result = execute(script, message=message)
    assert result.actions == (Keep(implicit=True),)
    assert result.error is not None and "too large" in str(result.error)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_message_runs_without_raising(message: bytes) -> None:
    script = ('require ["body", "envelope", "date", "variables", "duplicate", "vacation",'
              ' "editheader", "fileinto"];'
              'if anyof (header :contains "subject" "a", address :domain "from" "b",'
              ' body :raw :contains "c", date "date" "year" "2024", duplicate,'
              ' exists "to") { addheader "X" "y"; fileinto "A"; }'
              'vacation "away";')
    result = execute(script, message=message)
    assert result.actions and result.error is None


def test_compose_vacation_reply() -> None:
    reply = vacation_of(actions('require "vacation"; vacation "Back on Monday.\nBye";'))
    text = compose_vacation_reply(reply, from_address="roadrunner@acme.example.com",
                                  date="Wed, 01 May 2024 12:30:15 +0000",
                                  message_id="<r1@acme.example.com>")
    view = MessageView(text)
    assert view.values("to") == ["coyote@desert.example.org"]
    assert view.values("subject") == ["Auto: I have a present for you"]
    assert view.values("auto-submitted") == ["auto-replied"]
    assert view.values("in-reply-to") == ["<1234@desert.example.org>"]
    assert view.raw_body() == "Back on Monday.\r\nBye\r\n"
    unsent = vacation_of(actions('require "vacation"; vacation "x";',
                                 envelope=Envelope("", ENVELOPE.recipient)))
    with pytest.raises(ValueError, match="not to be sent"):
        compose_vacation_reply(unsent, from_address="a@b.example", date="d", message_id="<m>")


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_header_tests_match_the_unfolded_value(ending: bytes) -> None:
    """RFC 5228 2.4.2.2 / RFC 5322 2.2.3: CRLF before folding whitespace is removed, the
    whitespace itself kept; address tests parse the unfolded field."""
    message = (b"Subject: hello" + ending + b" world" + ending
               + b'From: "A. Person"' + ending + b"\t<a@example.com>" + ending + ending + b"b")
    script = ('if allof (header :is "subject" "hello world",'
              ' header :matches "subject" "hello world",'
              ' address :is "from" "a@example.com",'
              ' header :contains "from" "Person\\"\t<a@") { discard; }')
    assert actions(script, message=message) == [Discard()]
