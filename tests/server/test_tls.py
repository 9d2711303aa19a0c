from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from sealmail.config.imapd_conf import ConfigError, ImapdConfig, parse_imapd_conf
from sealmail.mta.config.main_cf import MainCfEntry, MainConfig, parse_main_cf
from sealmail.server.tls import (
    TLSConfigError,
    cipher_bits,
    peer_identity,
    postfix_protocols,
    server_context,
    smtpd_context,
    tls_versions,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Files:
    cert: Path
    key: Path
    client_ca: Path


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> Files:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, client_ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(client_ca))
    return Files(cert, key, client_ca)


def config(**values: object) -> ImapdConfig:
    text = "".join(f"{key}: {value}\n" for key, value in values.items())
    return parse_imapd_conf(text, "imapd.conf")


def tls_config(files: Files, **values: object) -> ImapdConfig:
    return config(tls_server_cert=files.cert, tls_server_key=files.key, **values)


def client_context(ca: trustme.CA, leaf: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    if leaf is not None:
        leaf.configure_cert(context)
    return context


@dataclass
class Session:
    """What the server saw, and what the client got back."""

    server: dict[str, object] = field(default_factory=dict)
    reply: bytes = b""
    error: BaseException | None = None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> Session:
    """A real TLS session over 127.0.0.1: asyncio server, Python's ssl client."""
    session = Session()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        session.server.update(
            identity=peer_identity(ssl_object),
            bits=cipher_bits(ssl_object),
            version=ssl_object.version(),
        )
        writer.write(b"ok\r\n")
        await writer.drain()
        writer.close()

    async def run() -> None:
        listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname="localhost"
            )
            try:
                session.reply = await reader.readline()
            finally:
                writer.close()
        except (ssl.SSLError, ConnectionError) as exc:
            session.error = exc
        finally:
            listener.close()
            await listener.wait_closed()

    asyncio.run(run())
    return session


def blocking_handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[BaseException | None, str | None]:
    """A handshake with blocking sockets: the server side's error (where a refusal shows) and the
    version the client got. asyncio hides the server's handshake errors, hence a thread here."""
    outcome: list[BaseException | None] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
                outcome.append(None)
            except (OSError, ssl.SSLError) as exc:
                outcome.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        version: str | None = None
        try:
            raw = socket.create_connection(listener.getsockname(), timeout=30)
            with raw, client.wrap_socket(raw, server_hostname="localhost") as tls:
                version = tls.version()
                tls.recv(2)
        except (OSError, ssl.SSLError):
            pass
        thread.join(30)
    assert outcome, "the server thread did not finish"
    return outcome[0], version


# -- contexts from imapd.conf -------------------------------------------------------------------


def test_no_certificate_means_no_tls() -> None:
    assert server_context(config()) is None


@pytest.mark.parametrize("option", ["tls_server_key", "tls_client_ca_file"])
def test_key_or_ca_without_certificate_is_an_error(files: Files, option: str) -> None:
    with pytest.raises(TLSConfigError, match=f"{option}: .*tls_server_cert is not"):
        server_context(config(**{option: files.key}))


def test_handshake_with_defaults(files: Files, ca: trustme.CA) -> None:
    context = server_context(tls_config(files))
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    session = handshake(context, client_context(ca))
    assert session.error is None
    assert session.reply == b"ok\r\n"
    assert session.server["identity"] is None
    assert session.server["version"] == "TLSv1.3"
    bits = session.server["bits"]
    assert isinstance(bits, int) and bits >= 128


def test_key_inside_the_certificate_file(tmp_path: Path, files: Files, ca: trustme.CA) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(files.key.read_bytes() + files.cert.read_bytes())
    context = server_context(config(tls_server_cert=combined))
    assert context is not None
    assert handshake(context, client_context(ca)).reply == b"ok\r\n"


def _limited_client(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    client = client_context(ca)
    # OpenSSL's default security level would stop the client itself from offering TLS 1.1;
    # lower it so that the refusal we see is the server's.
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.minimum_version = version
    client.maximum_version = version
    return client


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused_by_default(files: Files, ca: trustme.CA) -> None:
    context = server_context(tls_config(files))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    error, version = blocking_handshake(context, _limited_client(ca, ssl.TLSVersion.TLSv1_1))
    assert isinstance(error, ssl.SSLError)
    assert error.reason == "UNSUPPORTED_PROTOCOL"
    assert version is None
    # The same client offering TLS 1.2 gets in: the refusal was about the version.
    error, version = blocking_handshake(context, _limited_client(ca, ssl.TLSVersion.TLSv1_2))
    assert (error, version) == (None, "TLSv1.2")


def test_tls_versions_can_require_tls_1_3(files: Files, ca: trustme.CA) -> None:
    context = server_context(tls_config(files, tls_versions="tls1_3"))
    assert context is not None
    error, _ = blocking_handshake(context, _limited_client(ca, ssl.TLSVersion.TLSv1_2))
    assert isinstance(error, ssl.SSLError)
    assert error.reason == "UNSUPPORTED_PROTOCOL"
    assert handshake(context, client_context(ca)).server["version"] == "TLSv1.3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls1_2 tls1_3", (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)),
        ("TLS1_3,tls1_2", (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)),
        ("tls1_2", (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)),
        ("tls1_0 tls1_1 tls1_2", (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2)),
    ],
)
def test_tls_versions_range(text: str, expected: tuple[ssl.TLSVersion, ssl.TLSVersion]) -> None:
    assert tls_versions(config(tls_versions=text)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no TLS version"),
        ("ssl3 tls1_2", "ssl3 is not supported"),
        ("tls1_4", "'tls1_4' is not one of"),
        ("tls1_1 tls1_3", "leaves a gap"),
    ],
)
def test_bad_tls_versions(files: Files, text: str, reason: str) -> None:
    with pytest.raises(TLSConfigError, match=reason) as caught:
        server_context(tls_config(files, tls_versions=text))
    assert caught.value.option == "tls_versions"
    assert str(caught.value).startswith("imapd.conf: tls_versions: ")


# -- configuration errors name the option and the file ------------------------------------------


def _encrypted(key: Path, target: Path) -> Path:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    target.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return target


def test_missing_certificate_file(tmp_path: Path, files: Files) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError) as caught:
        server_context(config(tls_server_cert=missing, tls_server_key=files.key))
    error = caught.value
    assert isinstance(error, ConfigError)
    assert (error.option, error.file) == ("tls_server_cert", str(missing))
    assert (
        str(error)
        == f"imapd.conf: tls_server_cert: {missing}: cannot read: No such file or directory"
    )


def test_missing_key_file(tmp_path: Path, files: Files) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(TLSConfigError, match="cannot read") as caught:
        server_context(config(tls_server_cert=files.cert, tls_server_key=missing))
    assert (caught.value.option, caught.value.file) == ("tls_server_key", str(missing))


def test_certificate_file_without_a_certificate(files: Files) -> None:
    with pytest.raises(TLSConfigError, match="no PEM certificate") as caught:
        server_context(config(tls_server_cert=files.key, tls_server_key=files.key))
    assert (caught.value.option, caught.value.file) == ("tls_server_cert", str(files.key))


def test_key_that_does_not_match_the_certificate(
    tmp_path: Path, files: Files, ca: trustme.CA
) -> None:
    other = tmp_path / "other.key"
    ca.issue_cert("localhost").private_key_pem.write_to_path(str(other))
    with pytest.raises(TLSConfigError, match="does not match the certificate") as caught:
        server_context(config(tls_server_cert=files.cert, tls_server_key=other))
    assert (caught.value.option, caught.value.file) == ("tls_server_key", str(other))
    assert str(files.cert) in str(caught.value)


def test_encrypted_key_is_refused_without_prompting(tmp_path: Path, files: Files) -> None:
    encrypted = _encrypted(files.key, tmp_path / "encrypted.key")
    with pytest.raises(TLSConfigError, match="encrypted") as caught:
        server_context(config(tls_server_cert=files.cert, tls_server_key=encrypted))
    assert caught.value.file == str(encrypted)


def test_key_file_that_holds_no_key(tmp_path: Path, files: Files) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TLSConfigError, match="no usable PEM private key") as caught:
        server_context(config(tls_server_cert=files.cert, tls_server_key=garbage))
    assert caught.value.option == "tls_server_key"


def test_certificate_file_without_key_and_no_key_option(files: Files) -> None:
    with pytest.raises(TLSConfigError, match="tls_server_key is not set") as caught:
        server_context(config(tls_server_cert=files.cert))
    assert (caught.value.option, caught.value.file) == ("tls_server_cert", str(files.cert))


def test_client_ca_file_without_certificates(files: Files) -> None:
    with pytest.raises(TLSConfigError, match="no PEM CA certificate") as caught:
        server_context(tls_config(files, tls_client_ca_file=files.key))
    assert (caught.value.option, caught.value.file) == ("tls_client_ca_file", str(files.key))


# -- contexts from main.cf (smtpd) --------------------------------------------------------------


def main_cf(text: str) -> MainConfig:
    return MainConfig.from_document(parse_main_cf(text, "main.cf"), hostname="mx.test")


def smtpd_tls(files: Files, level: str = "may", more: str = "") -> MainConfig:
    return main_cf(
        f"smtpd_tls_security_level = {level}\nsmtpd_tls_cert_file = {files.cert}\n"
        f"smtpd_tls_key_file = {files.key}\n{more}"
    )


@pytest.mark.parametrize("level", ["", "none"])
def test_smtpd_offers_no_tls_below_may(files: Files, level: str) -> None:
    assert smtpd_context(smtpd_tls(files, level)) is None


def test_smtpd_context_is_the_hardened_one(files: Files, ca: trustme.CA) -> None:
    context = smtpd_context(smtpd_tls(files))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2  # sealmail's default, not >=TLSv1
    assert context.verify_mode == ssl.CERT_NONE
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert context.options & option
    session = handshake(context, client_context(ca))
    assert (session.reply, session.server["version"]) == (b"ok\r\n", "TLSv1.3")


def test_smtpd_key_defaults_to_the_certificate_file(
    tmp_path: Path, files: Files, ca: trustme.CA
) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(files.key.read_bytes() + files.cert.read_bytes())
    context = smtpd_context(
        main_cf(f"smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = {combined}\n")
    )
    assert context is not None
    assert handshake(context, client_context(ca)).reply == b"ok\r\n"


def _chain_file(path: Path, leaf: trustme.LeafCert) -> Path:
    path.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    return path


def _tls12_client(ca: trustme.CA, ciphers: str) -> ssl.SSLContext:
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(ciphers)
    return client


def test_smtpd_chain_files_one_per_key_type(tmp_path: Path, ca: trustme.CA) -> None:
    ecdsa = _chain_file(tmp_path / "ecdsa.pem", ca.issue_cert("localhost"))
    rsa = _chain_file(
        tmp_path / "rsa.pem", ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    )
    config = main_cf(
        "smtpd_tls_security_level = may\n"
        "smtpd_tls_cert_file = /nonexistent/ignored.pem\n"  # chain files take precedence
        f"smtpd_tls_chain_files = {ecdsa}, {rsa}\n"
    )
    context = smtpd_context(config)
    assert context is not None
    # A TLS 1.2 client that takes one signature algorithm only gets the matching certificate.
    for ciphers in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"):
        error, version = blocking_handshake(context, _tls12_client(ca, ciphers))
        assert (error, version) == (None, "TLSv1.2")


def test_smtpd_chain_file_without_a_key(tmp_path: Path, files: Files) -> None:
    with pytest.raises(TLSConfigError, match="no private key in this file") as caught:
        smtpd_context(
            main_cf(f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {files.cert}\n")
        )
    assert (caught.value.option, caught.value.file) == ("smtpd_tls_chain_files", str(files.cert))
    assert str(caught.value).startswith("main.cf:2: smtpd_tls_chain_files: ")


@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_smtpd_tls_needs_a_certificate(level: str) -> None:
    with pytest.raises(TLSConfigError, match=f"{level} needs a certificate") as caught:
        smtpd_context(main_cf(f"smtpd_tls_security_level = {level}\n"))
    assert caught.value.option == "smtpd_tls_cert_file"


def test_smtpd_certificate_errors_name_file_and_line(tmp_path: Path, files: Files) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match="cannot read") as caught:
        smtpd_context(
            main_cf(f"# TLS\nsmtpd_tls_security_level = may\nsmtpd_tls_cert_file = {missing}\n")
        )
    assert str(caught.value).startswith(f"main.cf:3: smtpd_tls_cert_file: {missing}: ")
    other = tmp_path / "other.key"
    other.write_bytes(b"")
    with pytest.raises(TLSConfigError, match="no usable PEM private key") as caught:
        smtpd_context(smtpd_tls(files, more=f"smtpd_tls_key_file = {other}\n"))
    assert (caught.value.option, caught.value.line) == ("smtpd_tls_key_file", 4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_smtpd_protocols_at_may_mandatory_protocols_at_encrypt(
    files: Files, ca: trustme.CA
) -> None:
    only_13 = "smtpd_tls_protocols = >=TLSv1.3\n"
    tls12 = _limited_client(ca, ssl.TLSVersion.TLSv1_2)
    context = smtpd_context(smtpd_tls(files, "may", only_13))
    assert context is not None
    error, _ = blocking_handshake(context, tls12)
    assert isinstance(error, ssl.SSLError) and error.reason == "UNSUPPORTED_PROTOCOL"
    context = smtpd_context(smtpd_tls(files, "encrypt", only_13))  # the mandatory ones apply
    assert context is not None
    assert blocking_handshake(context, tls12) == (None, "TLSv1.2")
    context = smtpd_context(
        smtpd_tls(files, "encrypt", "smtpd_tls_mandatory_protocols = TLSv1.3\n")
    )
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_smtpd_protocol_errors_name_the_master_cf_override(files: Files) -> None:
    config = smtpd_tls(files).with_overrides(
        [MainCfEntry("smtpd_tls_protocols", "!TLSv1.2", "master.cf", 12)]
    )
    with pytest.raises(TLSConfigError, match="leaves a gap") as caught:
        smtpd_context(config)
    assert str(caught.value).startswith("master.cf:12: smtpd_tls_protocols: ")


V1, V11, V12, V13 = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2,
                     ssl.TLSVersion.TLSv1_3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (">=TLSv1.2", (V12, V13)),
        (">=TLSv1", (V1, V13)),  # Postfix's default
        ("!SSLv2, !SSLv3", (V1, V13)),
        ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", (V12, V13)),
        ("TLSv1.2 TLSv1.3", (V12, V13)),
        ("tlsv1.3", (V13, V13)),
        (">=0303", (V12, V13)),
        ("<=TLSv1.2", (V1, V12)),
        (">=TLSv1.1 <=TLSv1.2", (V11, V12)),
        (">=SSLv3", (V1, V13)),
        ("", (V1, V13)),
    ],
)
def test_postfix_protocols(text: str, expected: tuple[ssl.TLSVersion, ssl.TLSVersion]) -> None:
    assert postfix_protocols(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("!TLSv1.2", "leaves a gap"),
        ("TLSv1 TLSv1.3", "leaves a gap"),
        ("SSLv3 TLSv1", "SSLv3 is not supported"),
        (">=TLSv1.4", "'TLSv1.4' is not one of"),
        ("<=SSLv3", "leaves no TLS version"),
        (">=TLSv1.3 <=TLSv1.2", "leaves no TLS version"),
        ("!TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3", "leaves no TLS version"),
    ],
)
def test_bad_postfix_protocols(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        postfix_protocols(text)


# -- client certificates ------------------------------------------------------------------------


def test_client_certificate_is_requested_not_required(files: Files, ca: trustme.CA) -> None:
    context = server_context(tls_config(files, tls_client_ca_file=files.client_ca))
    assert context is not None
    assert context.verify_mode == ssl.CERT_OPTIONAL
    session = handshake(context, client_context(ca))
    assert session.reply == b"ok\r\n"
    assert session.server["identity"] is None


@pytest.mark.parametrize(
    ("identities", "common_name", "expected"),
    [
        (("lmtpuser@example.com",), "lmtpuser", "lmtpuser"),
        (("lmtpuser@example.com", "relay.example.com"), None, "lmtpuser@example.com"),
        (("relay.example.com", "lmtpuser@example.com"), None, "lmtpuser@example.com"),
        (("relay.example.com",), None, "relay.example.com"),
    ],
)
def test_verified_client_certificate_identity(
    files: Files,
    ca: trustme.CA,
    identities: tuple[str, ...],
    common_name: str | None,
    expected: str,
) -> None:
    context = server_context(tls_config(files, tls_client_ca_file=files.client_ca))
    assert context is not None
    leaf = ca.issue_cert(*identities, common_name=common_name)
    session = handshake(context, client_context(ca, leaf))
    assert session.error is None
    assert session.server["identity"] == expected


def test_client_certificate_from_another_ca_is_refused(files: Files, ca: trustme.CA) -> None:
    context = server_context(tls_config(files, tls_client_ca_file=files.client_ca))
    assert context is not None
    stranger = trustme.CA().issue_cert("mallory@example.com", common_name="lmtpuser")
    session = handshake(context, client_context(ca, stranger))
    assert session.reply != b"ok\r\n"
    assert session.server == {}


def test_client_certificate_is_ignored_when_no_ca_is_configured(
    files: Files, ca: trustme.CA
) -> None:
    context = server_context(tls_config(files))
    assert context is not None
    leaf = ca.issue_cert("lmtpuser@example.com", common_name="lmtpuser")
    assert handshake(context, client_context(ca, leaf)).server["identity"] is None


def test_cipher_bits_is_zero_before_the_handshake(files: Files) -> None:
    context = server_context(tls_config(files))
    assert context is not None
    unstarted = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert cipher_bits(unstarted) == 0
    assert peer_identity(unstarted) is None


# -- identity rules on certificate shapes trustme cannot make -----------------------------------


@dataclass
class _FakeContext:
    verify_mode: ssl.VerifyMode


@dataclass
class _FakeSSLObject:
    """What peer_identity reads: the context's verify mode and getpeercert()'s dict."""

    cert: dict[str, object]
    verify_mode: ssl.VerifyMode = ssl.CERT_OPTIONAL

    @property
    def context(self) -> _FakeContext:
        return _FakeContext(self.verify_mode)

    def getpeercert(self) -> dict[str, object]:
        return self.cert


def _subject(*names: tuple[str, str]) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(((name, value),) for name, value in names)


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ({"subject": _subject(("organizationName", "x"), ("commonName", "alice"))}, "alice"),
        ({"subject": _subject(("commonName", "alice"), ("commonName", "alice"))}, "alice"),
        ({"subject": _subject(("commonName", "alice"), ("commonName", "admin"))}, None),
        ({"subject": _subject(("commonName", "ali\x00ce"))}, None),
        ({"subject": _subject(("commonName", "alice smith"))}, None),
        ({"subject": _subject(("commonName", ""))}, None),
        ({"subject": (), "subjectAltName": (("IP Address", "192.0.2.1"),)}, None),
        ({"subject": (), "subjectAltName": (("DNS", "a.example"), ("email", "b@x"))}, "b@x"),
        ({}, None),
    ],
)
def test_identity_rules(cert: dict[str, object], expected: str | None) -> None:
    fake = _FakeSSLObject(cert)
    assert peer_identity(fake) == expected  # type: ignore[arg-type]


def test_no_identity_when_the_server_did_not_verify() -> None:
    fake = _FakeSSLObject({"subject": _subject(("commonName", "alice"))}, ssl.CERT_NONE)
    assert peer_identity(fake) is None  # type: ignore[arg-type]
