"""sealmail.metrics without a running daemon: the log lines it counts as postfix_exporter does,
the hooks when off, metrics_listen's syntax, and the MTA's queue collector."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sealmail import metrics
from sealmail.config.options import refuse_listen_address
from sealmail.mta.queue import AttemptResult, Envelope, Queue, QueueName, RecipientRecord

prometheus_client = pytest.importorskip("prometheus_client")


def sample(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_log_lines_counted_as_postfix_exporter_does() -> None:
    registry = prometheus_client.CollectorRegistry()
    m = metrics._Instruments(registry)
    lines = [
        ("sealmail.mta.smtpd", "connect from unknown[127.0.0.1]"),
        ("sealmail.mta.smtpd", "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 "
                               "<x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP"),
        ("sealmail.mta.smtpd", "unknown[127.0.0.1]: SASL LOGIN authentication failed: bad"),
        ("sealmail.mta.smtpd", "TJYDF4V2BPP8: client=unknown[127.0.0.1]"),
        ("sealmail.mta.smtpd", "TJYDF4V2BPP9: client=unknown[127.0.0.1], sasl_method=PLAIN, "
                               "sasl_username=alice"),
        ("sealmail.mta.smtpd", "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 quit=1"),
        ("sealmail.mta.qmgr", "TJYDF4V2BPP8: from=<a@b>, size=300, nrcpt=3 (queue active)"),
        ("sealmail.mta.qmgr", "TJYDF4V2BPP8: removed"),
        ("sealmail.mta.agents.lmtp", "TJYDF4V2BPP8: to=<a@example.com>, relay=x[/s], "
                                     "delay=0.5, delays=0.1/0.1/0.2/0.1, dsn=2.1.5, status=sent "
                                     "(250 2.1.5 Ok)"),
        ("sealmail.mta.agents.smtp", "TJYDF4V2BPP8: to=<b@far.example>, relay=none, delay=3, "
                                     "delays=1/0/2/0, dsn=4.4.1, status=deferred (refused)"),
        ("sealmail.imapd", "badlogin: localhost [127.0.0.1] plaintext bob [SASL(-13): x: y] "
                           "SESSIONID=<s>"),
        ("sealmail.pop3d", "badlogin: localhost [127.0.0.1] PLAIN [SASL(-13): x: y] "
                           "SESSIONID=<s>"),
        ("sealmail.mta.smtpd", "warning: something unrelated"),
    ]
    for logger, message in lines:
        metrics.count_line(m, logger, message)
    assert sample(registry, "postfix_smtpd_connects_total") == 1
    assert sample(registry, "postfix_smtpd_disconnects_total") == 1
    assert sample(registry, "postfix_smtpd_messages_rejected_total", code="554") == 1
    assert sample(registry, "postfix_smtpd_sasl_authentication_failures_total") == 1
    assert sample(registry, "postfix_smtpd_messages_processed_total", sasl_method="") == 1
    assert sample(registry, "postfix_smtpd_messages_processed_total", sasl_method="PLAIN") == 1
    assert sample(registry, "postfix_qmgr_messages_inserted_recipients_sum") == 3
    assert sample(registry, "postfix_qmgr_messages_inserted_size_bytes_sum") == 300
    assert sample(registry, "postfix_qmgr_messages_removed_total") == 1
    assert sample(registry, "postfix_lmtp_delivery_delay_seconds_sum", stage="transmission") == 0.1
    assert sample(registry, "postfix_smtp_delivery_delay_seconds_count",
                  stage="connection_setup") == 1
    assert sample(registry, "sealmail_mta_deliveries_total", transport="smtp",
                  status="deferred") == 1
    assert sample(registry, "sealmail_auth_failures_total", service="smtpd",
                  mechanism="LOGIN") == 1
    assert sample(registry, "sealmail_auth_failures_total", service="imap",
                  mechanism="PLAINTEXT") == 1
    assert sample(registry, "sealmail_auth_failures_total", service="pop3",
                  mechanism="PLAIN") == 1


def test_hooks_are_no_ops_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_instruments", None)
    monkeypatch.delenv(metrics.ENVIRONMENT, raising=False)
    assert not metrics.enable()
    with metrics.connection("imap", "imap"):
        metrics.observe_command("SELECT", 0.1)
        metrics.observe_end_of_data("lmtpd", 0.1)
    metrics.process_exited(1)
    handler = metrics.LogMetrics()
    handler.emit(logging.LogRecord("sealmail.mta.smtpd", logging.INFO, "", 0, "connect from x",
                                   None, None))


def test_missing_package_is_warned_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(metrics, "available", lambda: False)
    assert not metrics.prepare(tmp_path / "m")
    assert "metrics_listen" in caplog.text and "prometheus-client" in caplog.text
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("text", "ok"), [
    ("127.0.0.1:9100", True), ("[::1]:9100", True), (":9100", True), ("", True),
    ("127.0.0.1", False), ("127.0.0.1:0", False), ("host:99999", False), ("x:y", False),
])
def test_metrics_listen_syntax(text: str, ok: bool) -> None:
    assert (refuse_listen_address(text) is None) is ok
    if ok and text:
        assert metrics.parse_listen(text)[1] == 9100


def test_queue_collector(tmp_path: Path) -> None:
    from sealmail.mta.metrics import QueueCollector

    queue = Queue(tmp_path / "spool")
    queue.create_directories()
    now = 1_700_000_000.0
    for age, size in ((30, 500), (5000, 20_000)):
        envelope = Envelope("a@b.test", (RecipientRecord("c@d.test"),), arrival=now - age,
                            size=size)
        queue_id = queue.enqueue(envelope, b"x" * size)
        entry = queue.load(queue_id, QueueName.INCOMING)
        queue.record(entry, [AttemptResult(0, "deferred", "4.0.0", "later", "x", now)])
        queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)
    registry = prometheus_client.CollectorRegistry()
    registry.register(QueueCollector(queue, clock=lambda: now))
    assert sample(registry, "sealmail_mta_queue_messages", queue="deferred") == 2
    assert sample(registry, "sealmail_mta_queue_messages", queue="hold") == 0
    assert sample(registry, "sealmail_mta_queue_oldest_message_age_seconds",
                  queue="deferred") == 5000
    assert sample(registry, "postfix_showq_message_size_bytes_bucket", queue="deferred",
                  le="1000.0") == 1
    assert sample(registry, "postfix_showq_message_age_seconds_bucket", queue="deferred",
                  le="100.0") == 1
    assert sample(registry, "postfix_showq_message_age_seconds_count", queue="deferred") == 2
    text = prometheus_client.generate_latest(registry).decode()
    assert 'postfix_showq_message_size_bytes_bucket{le="+Inf",queue="deferred"} 2.0' in text


# -- reaped workers' files fold into the archive ---------------------------------------------

WORKER = """
import os
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
registry = CollectorRegistry()
Counter("jobs_total", "Jobs.", ["kind"], registry=registry).labels("{kind}").inc({jobs})
seconds = Histogram("job_seconds", "Job time.", buckets=(0.1, 1.0), registry=registry)
for value in ({observed}):
    seconds.observe(value)
Gauge("open_sessions", "Open.", multiprocess_mode="livesum", registry=registry).inc()
print(os.getpid())
"""


def _worker(directory: Path, kind: str, jobs: int, observed: str) -> int:
    """A worker process that counted and exited; its pid (its files are in `directory`)."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WORKER.format(kind=kind, jobs=jobs, observed=observed)],
        env={**os.environ, metrics.ENVIRONMENT: str(directory)}, check=True,
        capture_output=True, text=True)
    return int(done.stdout)


def _totals(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in metrics.WorkerFiles(directory).collect() for s in metric.samples}


def test_a_reaped_workers_counters_fold_into_the_archive(tmp_path: Path) -> None:
    first = _worker(tmp_path, "a", 3, "0.05, 0.5")
    second = _worker(tmp_path, "b", 2, "5.0,")
    before = _totals(tmp_path)
    assert before[("jobs_total", (("kind", "a"),))] == 3
    assert before[("job_seconds_count", ())] == 3
    metrics.fold_process(tmp_path, first)
    metrics.fold_process(tmp_path, second)
    metrics.fold_process(tmp_path, second)  # twice, or a pid with no files: nothing more
    assert _totals(tmp_path) == before  # totals unchanged across the workers' deaths
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["counter_archive.db", f"gauge_livesum_{first}.db",
                     f"gauge_livesum_{second}.db", "histogram_archive.db"]
    third = _worker(tmp_path, "a", 1, "0.5,")  # a later worker adds to the folded totals
    metrics.fold_process(tmp_path, third)
    after = _totals(tmp_path)
    assert after[("jobs_total", (("kind", "a"),))] == 4
    assert after[("job_seconds_bucket", (("le", "1.0"),))] == 3
    assert after[("job_seconds_count", ())] == 4
