"""The sasldb: secrets round-trip, nothing reversible is stored, several processes share it."""

from __future__ import annotations

import grp
import multiprocessing
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from sealmail.auth.sasldb import SaslDB, SaslDBError, sasldb_path
from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.proto.sasl import Identity, Verdict, cram_md5_secret

LMTPUSER = Identity("lmtpuser", "cyrus.example.com")
PASSWORD = "Corr3ct-Horse-Battery"


def test_password_round_trip(sasldb: SaslDB) -> None:
    sasldb.set_password(LMTPUSER, PASSWORD)
    assert sasldb.check_password(LMTPUSER, PASSWORD) is Verdict.OK
    assert sasldb.check_password(LMTPUSER, PASSWORD + "x") is Verdict.NO
    assert sasldb.check_password(Identity("lmtpuser", "cyrus"), PASSWORD) is Verdict.NO
    assert sasldb.check_password(Identity("nobody", "cyrus.example.com"), PASSWORD) is Verdict.NO


def test_saslprep_equivalent_passwords_match(sasldb: SaslDB) -> None:
    sasldb.set_password(LMTPUSER, "I\u00adX")  # RFC 4013 3: soft hyphen maps to nothing
    assert sasldb.check_password(LMTPUSER, "IX") is Verdict.OK


def test_cram_and_scram_secrets(sasldb: SaslDB) -> None:
    sasldb.set_password(LMTPUSER, PASSWORD)
    assert sasldb.cram_md5_secret(LMTPUSER) == cram_md5_secret(PASSWORD.encode())
    for mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        secret = sasldb.scram_secret(mechanism, LMTPUSER)
        assert secret is not None and secret.iterations >= 4096 and len(secret.salt) == 16
    assert sasldb.scram_secret("SCRAM-SHA-512", LMTPUSER) is None
    assert sasldb.cram_md5_secret(Identity("nobody", "x")) is None


def test_file_holds_no_password_in_any_form(sasldb: SaslDB) -> None:
    sasldb.set_password(LMTPUSER, PASSWORD)
    sasldb.set_password(Identity("other", "cyrus.example.com"), "s3cr3t-two")
    data = sasldb.path.read_bytes()
    for secret in (PASSWORD, "s3cr3t-two"):
        for form in (secret.encode(), secret.encode("utf-16-le"), secret.encode().hex().encode()):
            assert form not in data
    assert stat.S_IMODE(sasldb.path.stat().st_mode) == 0o600


def test_group_makes_the_file_0640(tmp_path: Path) -> None:
    group = grp.getgrgid(0).gr_name
    database = SaslDB(tmp_path / "db", scrypt_n=2**10)
    database.set_password(LMTPUSER, PASSWORD, group=group)
    info = database.path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == 0
    with pytest.raises(SaslDBError, match="no such group"):
        SaslDB(tmp_path / "db2").set_password(LMTPUSER, PASSWORD, group="no-such-group-xyz")
    assert not (tmp_path / "db2").exists()


def test_no_plaintext_verifier_and_delete(sasldb: SaslDB) -> None:
    sasldb.set_password(LMTPUSER, PASSWORD, plaintext_verifier=False)
    assert sasldb.check_password(LMTPUSER, PASSWORD) is Verdict.NO
    assert sasldb.cram_md5_secret(LMTPUSER) is not None
    [entry] = sasldb.entries()
    assert entry.identity == LMTPUSER and "userPassword" not in entry.properties
    assert sasldb.delete(LMTPUSER) is True
    assert sasldb.delete(LMTPUSER) is False
    assert sasldb.entries() == []


def test_empty_inputs_are_refused(sasldb: SaslDB) -> None:
    with pytest.raises(ValueError):
        sasldb.set_password(LMTPUSER, "")
    with pytest.raises(ValueError):
        sasldb.set_password(Identity("", "realm"), PASSWORD)
    with pytest.raises(ValueError):
        SaslDB(sasldb.path, scram_iterations=1000)


def test_missing_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    missing = SaslDB(tmp_path / "none")
    with pytest.raises(SaslDBError, match="no such file"):
        missing.check_password(LMTPUSER, PASSWORD)
    assert not (tmp_path / "none").exists()
    with pytest.raises(SaslDBError, match="cannot create"):
        SaslDB(tmp_path / "no" / "dir" / "db").set_password(LMTPUSER, PASSWORD)
    foreign = tmp_path / "cyrus-sasldb2"
    foreign.write_bytes(b"\x00\x06\x15\x61" + b"\x00" * 4092)  # Berkeley DB hash magic
    with pytest.raises(SaslDBError, match=str(foreign)):
        SaslDB(foreign).entries()


@pytest.mark.skipif(shutil.which("saslpasswd2") is None, reason="Cyrus saslpasswd2 missing")
def test_a_cyrus_sasldb2_is_refused_not_misread(tmp_path: Path) -> None:
    cyrus_db = tmp_path / "sasldb2"
    subprocess.run(
        ["saslpasswd2", "-p", "-c", "-f", str(cyrus_db), "-u", "cyrus.example.com", "lmtpuser"],
        input=b"secret\n",
        check=True,
        capture_output=True,
    )
    with pytest.raises(SaslDBError, match="not a sealmail sasldb"):
        SaslDB(cyrus_db).check_password(LMTPUSER, "secret")


def test_path_follows_configuration() -> None:
    config = parse_imapd_conf("configdirectory: /var/lib/x\n")
    assert sasldb_path(config) == Path("/var/lib/x/sasldb2")
    config = parse_imapd_conf("sasl_sasldb_path: /etc/sealmail/sasldb\n")
    assert sasldb_path(config) == Path("/etc/sealmail/sasldb")


def _add_users(path: str, start: int) -> None:
    database = SaslDB(path, scrypt_n=2**10)
    for number in range(start, start + 5):
        database.set_password(Identity(f"user{number}", "example.org"), f"pw{number}")


def test_concurrent_writers_in_several_processes(sasldb: SaslDB) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_users, args=(str(sasldb.path), n * 5)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    users = {entry.identity.user for entry in sasldb.entries()}
    assert users == {f"user{n}" for n in range(20)}
    assert sasldb.check_password(Identity("user13", "example.org"), "pw13") is Verdict.OK
