"""Each mechanism driven by real client computations: scramp's SCRAM client, hmac for CRAM-MD5."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field

import pytest
import scramp

from sealmail.proto.sasl import (
    Challenge,
    CramMD5Secret,
    CredentialsUnavailable,
    Failure,
    FailureReason,
    Identity,
    MechanismContext,
    SaslUsageError,
    ScramSecret,
    Success,
    Verdict,
    cram_md5_secret,
    new_mechanism,
)

REALM = "cyrus.example.com"


@dataclass
class MemoryCredentials:
    """A verified fake: derives the same secrets the sasldb stores, keeps them in a dict."""

    passwords: dict[Identity, str] = field(default_factory=dict)
    down: bool = False
    checked: list[Identity] = field(default_factory=list)

    def check_password(self, identity: Identity, password: str) -> Verdict:
        if self.down:
            raise CredentialsUnavailable("backend down")
        self.checked.append(identity)
        ok = self.passwords.get(identity) == password
        return Verdict.OK if ok else Verdict.NO

    def cram_md5_secret(self, identity: Identity) -> CramMD5Secret | None:
        if self.down:
            raise CredentialsUnavailable("backend down")
        password = self.passwords.get(identity)
        return None if password is None else cram_md5_secret(password.encode())

    def scram_secret(self, mechanism: str, identity: Identity) -> ScramSecret | None:
        password = self.passwords.get(identity)
        if password is None:
            return None
        salt, stored, server, iterations = scramp.ScramMechanism(mechanism).make_auth_info(
            password, iteration_count=4096, salt=b"fixed-salt-16byt"
        )
        return ScramSecret(salt, iterations, stored, server)


def _entropy() -> object:
    counter = itertools.count(1)
    return lambda n: bytes((next(counter) + i) % 256 for i in range(n))


def make_context(
    credentials: MemoryCredentials | None = None,
    *,
    admins: frozenset[str] = frozenset({"admin"}),
    success_data: bool = False,
    peer: str | None = None,
) -> MechanismContext:
    creds = credentials or MemoryCredentials(
        {
            Identity("lmtpuser", REALM): "secret",
            Identity("admin", REALM): "adminpw",
            Identity("bob", "other.example"): "bobpw",
            Identity("jürgen", REALM): "pässword",
        }
    )
    return MechanismContext(
        credentials=creds,
        default_realm=REALM,
        authorize=lambda authcid, _authzid: authcid in admins,
        entropy=_entropy(),  # type: ignore[arg-type]
        success_data=success_data,
        tls_peer_identity=peer,
    )


# -- PLAIN ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "authcid", "authzid"),
    [
        (b"\x00lmtpuser\x00secret", "lmtpuser", "lmtpuser"),
        (b"lmtpuser\x00lmtpuser\x00secret", "lmtpuser", "lmtpuser"),
        (b"\x00lmtpuser@cyrus.example.com\x00secret", "lmtpuser", "lmtpuser"),
        (b"\x00bob@other.example\x00bobpw", "bob@other.example", "bob@other.example"),
        (b"alice\x00admin\x00adminpw", "admin", "alice"),
        ("\x00jürgen\x00pässword".encode(), "jürgen", "jürgen"),
    ],
)
def test_plain_success(message: bytes, authcid: str, authzid: str) -> None:
    mech = new_mechanism("plain", make_context())
    assert mech.step(message) == Success(authcid, authzid)
    assert mech.done


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    mech = new_mechanism("PLAIN", make_context())
    assert mech.step(None) == Challenge(b"")
    assert mech.step(b"\x00lmtpuser\x00secret") == Success("lmtpuser", "lmtpuser")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00lmtpuser\x00wrong", FailureReason.BAD_CREDENTIALS),
        (b"\x00nobody\x00secret", FailureReason.BAD_CREDENTIALS),
        (b"\x00lmtpuser@elsewhere\x00secret", FailureReason.BAD_CREDENTIALS),
        (b"bob\x00lmtpuser\x00secret", FailureReason.AUTHZ_DENIED),
        (b"lmtpuser\x00secret", FailureReason.MALFORMED),
        (b"\x00\x00secret", FailureReason.MALFORMED),
        (b"\x00lmtpuser\x00", FailureReason.MALFORMED),
        (b"\x00lmtpuser\x00sec\x00ret", FailureReason.MALFORMED),
        (b"\x00lmtp\xffuser\x00secret", FailureReason.MALFORMED),
        (b"", FailureReason.MALFORMED),
    ],
)
def test_plain_failures(message: bytes, reason: FailureReason) -> None:
    result = new_mechanism("PLAIN", make_context()).step(message)
    assert isinstance(result, Failure)
    assert result.reason is reason
    assert "secret" not in result.detail


def test_backend_down_is_a_temporary_failure() -> None:
    context = make_context(MemoryCredentials(down=True))
    result = new_mechanism("PLAIN", context).step(b"\x00lmtpuser\x00secret")
    assert isinstance(result, Failure) and result.reason is FailureReason.TEMPORARY


def test_finished_mechanism_cannot_be_stepped() -> None:
    mech = new_mechanism("PLAIN", make_context())
    mech.step(b"\x00lmtpuser\x00wrong")
    with pytest.raises(SaslUsageError):
        mech.step(b"\x00lmtpuser\x00secret")


# -- LOGIN ----------------------------------------------------------------------------------


def test_login_asks_username_then_password_like_cyrus() -> None:
    mech = new_mechanism("LOGIN", make_context())
    assert mech.step(None) == Challenge(b"Username:")
    assert mech.step(b"lmtpuser") == Challenge(b"Password:")
    assert mech.step(b"secret") == Success("lmtpuser", "lmtpuser")


def test_login_initial_response_is_the_user_name() -> None:
    mech = new_mechanism("LOGIN", make_context())
    assert mech.step(b"lmtpuser") == Challenge(b"Password:")
    result = mech.step(b"wrong")
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_CREDENTIALS


def test_login_empty_user_is_malformed() -> None:
    mech = new_mechanism("LOGIN", make_context())
    mech.step(None)
    result = mech.step(b"")
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


# -- CRAM-MD5 -------------------------------------------------------------------------------


def _cram_answer(user: str, password: str, challenge: bytes) -> bytes:
    return f"{user} {hmac.new(password.encode(), challenge, 'md5').hexdigest()}".encode()


def test_cram_md5_success_with_a_challenge_in_msg_id_form() -> None:
    mech = new_mechanism("CRAM-MD5", make_context())
    challenge = mech.step(None)
    assert isinstance(challenge, Challenge)
    assert challenge.data.startswith(b"<") and challenge.data.endswith(b"@cyrus.example.com>")
    assert mech.step(_cram_answer("lmtpuser", "secret", challenge.data)) == Success(
        "lmtpuser", "lmtpuser"
    )


def test_cram_md5_accepts_upper_case_hex_and_realm_users() -> None:
    mech = new_mechanism("CRAM-MD5", make_context())
    challenge = mech.step(None)
    assert isinstance(challenge, Challenge)
    user, digest = _cram_answer("bob@other.example", "bobpw", challenge.data).split(b" ")
    assert mech.step(user + b" " + digest.upper()) == Success(
        "bob@other.example", "bob@other.example"
    )


def test_cram_md5_challenges_differ() -> None:
    context = make_context()
    first = new_mechanism("CRAM-MD5", context).step(None)
    second = new_mechanism("CRAM-MD5", context).step(None)
    assert first != second


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, FailureReason.BAD_CREDENTIALS),  # replaced by a wrong-password answer below
        (b"lmtpuser", FailureReason.MALFORMED),
        (b"lmtpuser 1234", FailureReason.MALFORMED),
        (b" " + b"0" * 32, FailureReason.MALFORMED),
        (b"nobody " + b"0" * 32, FailureReason.BAD_CREDENTIALS),
        (b"lmtpuser " + b"z" * 32, FailureReason.MALFORMED),
    ],
)
def test_cram_md5_failures(answer: bytes | None, reason: FailureReason) -> None:
    mech = new_mechanism("CRAM-MD5", make_context())
    challenge = mech.step(None)
    assert isinstance(challenge, Challenge)
    if answer is None:
        answer = _cram_answer("lmtpuser", "wrong", challenge.data)
    result = mech.step(answer)
    assert isinstance(result, Failure) and result.reason is reason


def test_cram_md5_refuses_an_initial_response() -> None:
    result = new_mechanism("CRAM-MD5", make_context()).step(b"lmtpuser abc")
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


# -- SCRAM ----------------------------------------------------------------------------------


def _run_scram(
    mechanism: str,
    client: scramp.ScramClient,
    context: MechanismContext,
    *,
    initial: bool = True,
    rewrite_first: object = None,
) -> tuple[object, scramp.ScramClient]:
    mech = new_mechanism(mechanism, context)
    first = client.get_client_first()
    if callable(rewrite_first):
        first = rewrite_first(first)
    if not initial:
        assert mech.step(None) == Challenge(b"")
    result = mech.step(first.encode())
    if not isinstance(result, Challenge):
        return result, client
    client.set_server_first(result.data.decode())
    result = mech.step(client.get_client_final().encode())
    if isinstance(result, Challenge):  # the server signature as a last challenge
        client.set_server_final(result.data.decode())
        result = mech.step(b"")
    elif isinstance(result, Success) and result.data is not None:
        client.set_server_final(result.data.decode())
    return result, client


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("initial", [True, False])
def test_scram_against_scramp_client(mechanism: str, initial: bool) -> None:
    client = scramp.ScramClient([mechanism], "lmtpuser", "secret")
    result, _ = _run_scram(mechanism, client, make_context(), initial=initial)
    assert result == Success("lmtpuser", "lmtpuser")


def test_scram_success_data_rides_on_success_when_the_protocol_allows() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], "lmtpuser", "secret")
    result, _ = _run_scram("SCRAM-SHA-256", client, make_context(success_data=True))
    assert isinstance(result, Success) and result.data is not None  # and the client checked it


def test_scram_non_ascii_user_and_password() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], "jürgen", "pässword")
    result, _ = _run_scram("SCRAM-SHA-256", client, make_context())
    assert result == Success("jürgen", "jürgen")


def test_scram_wrong_password_fails() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], "lmtpuser", "nope")
    result, _ = _run_scram("SCRAM-SHA-256", client, make_context())
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_CREDENTIALS


def test_scram_unknown_user_fails() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-1"], "nobody", "secret")
    result, _ = _run_scram("SCRAM-SHA-1", client, make_context())
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_CREDENTIALS


def _manual_scram(mech_name: str, user: str, password: str, authzid: str) -> object:
    """RFC 5802 3 computed by hand: scramp's client cannot send a GS2 authzid."""
    hash_name = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech_name]
    mech = new_mechanism(mech_name, make_context())
    gs2 = f"n,a={authzid},"
    bare = f"n={user},r=clientnonce"
    challenge = mech.step((gs2 + bare).encode())
    assert isinstance(challenge, Challenge)
    server_first = challenge.data.decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        hash_name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    result = mech.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    if isinstance(result, Challenge):
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        expected = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, hash_name))
        assert result.data == expected
        result = mech.step(b"")
    return result


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_gs2_authzid_for_an_admin_and_refused_for_others(mechanism: str) -> None:
    assert _manual_scram(mechanism, "admin", "adminpw", "lmtpuser") == Success("admin", "lmtpuser")
    assert _manual_scram(mechanism, "lmtpuser", "secret", "lmtpuser") == Success(
        "lmtpuser", "lmtpuser"
    )
    result = _manual_scram(mechanism, "bob@other.example", "bobpw", "lmtpuser")
    assert isinstance(result, Failure) and result.reason is FailureReason.AUTHZ_DENIED


@pytest.mark.parametrize(
    "first",
    [
        b"p=tls-unique,,n=lmtpuser,r=abc",
        b"x,,n=lmtpuser,r=abc",
        b"n,,m=ext,n=lmtpuser,r=abc",
        b"n,,r=abc,n=lmtpuser",
        b"n,,n=lmtp=2Xuser,r=abc",
        b"n,,n=,r=abc",
        b"n,b=x,n=lmtpuser,r=abc",
        b"garbage",
    ],
)
def test_scram_bad_client_first_is_malformed(first: bytes) -> None:
    result = new_mechanism("SCRAM-SHA-256", make_context()).step(first)
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


def test_scram_client_final_with_wrong_nonce_or_binding_is_malformed() -> None:
    for tamper in ("r=", "c="):
        context = make_context()
        client = scramp.ScramClient(["SCRAM-SHA-256"], "lmtpuser", "secret")
        mech = new_mechanism("SCRAM-SHA-256", context)
        challenge = mech.step(client.get_client_first().encode())
        assert isinstance(challenge, Challenge)
        client.set_server_first(challenge.data.decode())
        final = client.get_client_final()
        if tamper == "r=":
            final = final.replace("r=", "r=X", 1)
        else:
            final = final.replace("c=biws", "c=" + base64.b64encode(b"y,,").decode(), 1)
        result = mech.step(final.encode())
        assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


def test_scram_non_empty_answer_to_server_final_fails() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-1"], "lmtpuser", "secret")
    mech = new_mechanism("SCRAM-SHA-1", make_context())
    challenge = mech.step(client.get_client_first().encode())
    assert isinstance(challenge, Challenge)
    client.set_server_first(challenge.data.decode())
    last = mech.step(client.get_client_final().encode())
    assert isinstance(last, Challenge) and last.data.startswith(b"v=")
    result = mech.step(b"junk")
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


# -- EXTERNAL -------------------------------------------------------------------------------


def test_external_uses_the_certificate_identity() -> None:
    mech = new_mechanism("EXTERNAL", make_context(peer="lmtpuser@cyrus.example.com"))
    assert mech.step(b"") == Success("lmtpuser", "lmtpuser")


def test_external_without_initial_response_asks_for_authzid() -> None:
    mech = new_mechanism("EXTERNAL", make_context(peer="admin"))
    assert mech.step(None) == Challenge(b"")
    assert mech.step(b"lmtpuser") == Success("admin", "lmtpuser")


def test_external_refuses_other_authzid_and_missing_certificate() -> None:
    result = new_mechanism("EXTERNAL", make_context(peer="bob@other.example")).step(b"lmtpuser")
    assert isinstance(result, Failure) and result.reason is FailureReason.AUTHZ_DENIED
    result = new_mechanism("EXTERNAL", make_context(peer=None)).step(b"")
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_CREDENTIALS


def test_unknown_mechanism_name() -> None:
    with pytest.raises(KeyError):
        new_mechanism("DIGEST-MD5", make_context())
