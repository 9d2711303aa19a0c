"""The MTA's /metrics (main.cf metrics_listen): the counters of sealmail.metrics, summed over the
master and its smtpd processes, and the queue as postfix_exporter's showq collector shows it,
read from the queue files at each scrape (sealmail.mta.showq, the source of postqueue -j).

postfix_showq_message_size_bytes and postfix_showq_message_age_seconds are histograms per queue
(the exporter's names and buckets); sealmail_mta_queue_messages and
sealmail_mta_queue_oldest_message_age_seconds give a dashboard the queue length and age
directly. The metrics directory is data_directory/metrics, owned by mail_owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sealmail import metrics
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.queue import Queue
from sealmail.mta.showq import QUEUE_ORDER, iter_entries

log = logging.getLogger("sealmail.mta.master")

SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)  # postfix_exporter's
AGE_BUCKETS = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)


def _histogram(values: list[float], buckets: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative bucket counts, as a histogram family wants them."""
    from prometheus_client.utils import floatToGoString

    label: Callable[[float], str] = floatToGoString
    counts = [(label(bound), float(sum(1 for v in values if v <= bound))) for bound in buckets]
    return [*counts, ("+Inf", float(len(values)))]


class QueueCollector:
    """postfix_showq_* and sealmail_mta_queue_*, from the queue files at scrape time."""

    def __init__(self, queue: Queue, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.clock = clock

    def describe(self) -> list[Any]:
        return []  # no scrape at registration: the queue is read only when asked

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        now = self.clock()
        sizes: dict[str, list[float]] = {q.value: [] for q in QUEUE_ORDER}
        ages: dict[str, list[float]] = {q.value: [] for q in QUEUE_ORDER}
        for item in iter_entries(self.queue):
            sizes[item["queue_name"]].append(float(item["message_size"]))
            ages[item["queue_name"]].append(max(0.0, now - float(item["arrival_time"])))
        size = HistogramMetricFamily("postfix_showq_message_size_bytes",
                                     "Size of messages in Postfix's message queue, in bytes",
                                     labels=["queue"])
        age = HistogramMetricFamily("postfix_showq_message_age_seconds",
                                    "Age of messages in Postfix's message queue, in seconds",
                                    labels=["queue"])
        length = GaugeMetricFamily("sealmail_mta_queue_messages", "Messages in each queue.",
                                   labels=["queue"])
        oldest = GaugeMetricFamily("sealmail_mta_queue_oldest_message_age_seconds",
                                   "Age of the oldest message in each queue (0: empty).",
                                   labels=["queue"])
        for queue in (q.value for q in QUEUE_ORDER):
            size.add_metric([queue], _histogram(sizes[queue], SIZE_BUCKETS), sum(sizes[queue]))
            age.add_metric([queue], _histogram(ages[queue], AGE_BUCKETS), sum(ages[queue]))
            length.add_metric([queue], len(sizes[queue]))
            oldest.add_metric([queue], max(ages[queue], default=0.0))
        yield from (size, age, length, oldest)


def start(main: Any, owner: tuple[int, int] | None) -> Any:
    """metrics_listen: prepare data_directory/metrics and serve; None when off (or when
    prometheus-client is missing: warned by name)."""
    listen = main.get(MAIN.metrics_listen).strip()
    if not listen:
        return None
    directory = Path(main.instance_path(MAIN.data_directory)) / "metrics"
    if not metrics.prepare(directory, owner):
        return None
    return metrics.serve(listen, [QueueCollector(Queue.from_config(main))])


def stop(server: Any) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()

