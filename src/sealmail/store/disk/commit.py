"""Delivery by group commit: stage, link, fsync, COMMIT (the story is in sealmail.store.disk).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from sealmail.durable import Fsyncs, fsync_directories, fsyncs_started
from sealmail.store import quota
from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.checkpoints import Checkpointer
from sealmail.store.disk import unconfirmed
from sealmail.store.disk.batches import Batches, Waiter
from sealmail.store.disk.deferred import DeferredSyncs, recover_stage_files
from sealmail.store.disk.index_writes import NAMES_PER_QUERY, SHARED_FROM, IndexWrites
from sealmail.store.disk.layout import (
    STAGE_DIRECTORY,
    Spool,
    os_error,
    write_synced,
    write_unsynced,
)
from sealmail.store.disk.recent import OWNER
from sealmail.store.disk.userdata import save_seen, seen_of
from sealmail.store.errors import MailboxNotFound, StoreError
from sealmail.store.headers import (
    header_block,
    listed_form,
    raw_header_fields,
    searchable_form,
)
from sealmail.store.index import sqlite_error
from sealmail.store.locks import CommitTurn
from sealmail.store.seen import SEEN, index_keeps_seen
from sealmail.store.sorting import SortFields, sort_fields


@dataclass(eq=False, kw_only=True)
class _Delivery(Waiter):
    """One deliver() call waiting for the group commit."""

    targets: Sequence[DeliveryTarget]
    stages: list[str | None]  # per target; shared paths when single-instance
    size: int
    guid: str
    internaldate: float
    headers: bytes | None  # searchable form of the header (sealmail.store.headers)
    listed: bytes  # the fields clients list folders with (sealmail.store.headers)
    sorting: SortFields  # sortable form (sealmail.store.sorting)
    results: list[AppendedMessage | StoreError | None]
    round: int | None = None  # deliver_batch's: its stage files' fsync round runs alongside
    # the commit, which records its copies in `unconfirmed` (store.disk.unconfirmed)
    kept: set[str] = field(default_factory=set)  # stage files a COMMIT named: the deferred
    # directory fsyncs remove them (store.disk.deferred)


class GroupCommit:
    """Appends messages: every deliver() joins the pending batch; one committer at a time
    commits the whole batch in one transaction."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._stage_counter = itertools.count()
        self._batches: Batches[_Delivery] = Batches()
        self._turn = CommitTurn(spool.lock_directory / "commit")
        self.checkpoints = Checkpointer(spool.index.path, spool.index.open_connection)
        self._confirmations = unconfirmed.Confirmations()
        self._syncs = DeferredSyncs(
            spool.fault, after=lambda: self._confirmations.clear_now(spool)
        )

    def close(self) -> None:
        self._syncs.close()
        self.checkpoints.close()
        self._turn.close()

    def sync_directories(self) -> None:
        """The deferred directory fsyncs of this process's commits, now (store.disk.deferred):
        after it, no stage file of a returned delivery is left."""
        self._syncs.sync()

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]:
        """Append `content` to every target; one result per target, in order.

        Returns only once every appended copy is durable (see the module docstring).
        """
        if not targets:
            return []
        partition_of = self._partitions_of([target.mailbox for target in targets])
        written: list[str] = []
        delivery: _Delivery | None = None
        try:
            delivery = self._prepare(content, targets, partition_of, written, None,
                                     internaldate)
            self._spool.fault("staged")
            if any(stage is not None for stage in delivery.stages):
                self._commit_in_group(delivery)
        finally:
            kept = set() if delivery is None else delivery.kept
            for path in written:
                if path in kept:
                    continue  # the deferred directory fsyncs remove it (store.disk.deferred)
                with suppress(OSError):  # removed at the next open or reconstruct
                    os.unlink(path)
        return _final(delivery.results)

    def deliver_batch(
        self, messages: Sequence[tuple[bytes, Sequence[DeliveryTarget]]]
    ) -> list[list[AppendedMessage | StoreError]]:
        """`deliver` of several messages by one thread (lmtpd's delivery thread runs whole
        batches), in ONE group commit. One result list per message, in order; a message that
        fails (its stage, its mailbox, its quota) fails alone.

        The stage files are written unsynced, then fsynced in ONE round with their directories
        (a thread fsyncing them one by one waits out each one's cache flush: a previous
        one-thread try fell from ~150 to 47 msg/s) that runs in the fsync pool *alongside* the
        commit (links, rows, COMMIT): the batch waits for one of the two disk waits, not their
        sum, and the turn is never held through the round. Until the round is done the commit's
        copies are `unconfirmed` (store.disk.unconfirmed); this returns once both are done. The
        mailbox directories are fsynced after the reply (store.disk.deferred)."""
        partition_of = self._partitions_of(
            [target.mailbox for _, targets in messages for target in targets]
        )
        written: list[str] = []
        deliveries: list[_Delivery] = []
        try:
            unsynced: list[int] = []
            try:
                for content, targets in messages:
                    deliveries.append(
                        self._prepare(content, targets, partition_of, written, unsynced)
                    )
                if written:
                    self._commit_alongside(deliveries, fsyncs_started(
                        {os.path.dirname(path) for path in written}, unsynced))
            finally:
                for fd in unsynced:
                    with suppress(OSError):
                        os.close(fd)
        finally:
            kept: set[str] = set()
            for delivery in deliveries:
                kept |= delivery.kept  # the deferred directory fsyncs remove them
            for path in written:
                if path in kept:
                    continue
                with suppress(OSError):  # removed at the next open or reconstruct
                    os.unlink(path)
        return [_final(delivery.results) for delivery in deliveries]

    def _partitions_of(self, names: list[str]) -> dict[str, str]:
        """Mailbox name -> the partition its copy is staged on. With one partition in
        imapd.conf every mailbox is on it, and the index is not read before staging (one
        statement a delivery, ~15 us of an IMAP APPEND's CPU: docs/benchmarks.md, append17): a
        name that is no mailbox, or a mailbox left on a partition since taken out of imapd.conf,
        is refused by the commit instead (`_append`), its stage file removed."""
        if len(self._spool.partitions) == 1:
            return dict.fromkeys(names, next(iter(self._spool.partitions)))
        with self._spool.reading() as conn:
            return partitions_of(conn, names)

    def _commit_alongside(self, deliveries: list[_Delivery], fsyncs: Fsyncs) -> None:
        """The group commit of `deliveries` while `fsyncs`, their stage files' round, runs; then
        the round's end: its copies confirmed, or, if it failed, expunged and failed."""
        round_ = self._confirmations.draw()
        for delivery in deliveries:
            delivery.round = round_
        try:
            self._spool.fault("staged")
            committing = [d for d in deliveries if _to_commit(d)]
            if committing:
                first, *others = committing
                self._batches.join(first, self._lead, others)
        finally:
            try:
                fsyncs.finish()  # before the caller closes the files, whatever happened
            except OSError as exc:
                self._withdraw(deliveries, round_, os_error(exc, "cannot stage message"))
            else:
                self._confirmations.done(round_)
        self._spool.fault("confirmed")

    def _withdraw(self, deliveries: list[_Delivery], round_: int, error: StoreError) -> None:
        """The round failed: what the commit stored is expunged (unconfirmed.withdraw) and
        every copy fails with `error`."""
        stored = [(result.mailbox, result.uid) for delivery in deliveries
                  for result in delivery.results if isinstance(result, AppendedMessage)]
        if stored:
            try:
                unconfirmed.withdraw(self._spool, round_, stored)
            except StoreError as exc:  # the next open after this process checks them
                error = StoreError(f"{error}; expunging the copies failed too: {exc}")
        _fail_pending(deliveries, error)

    def _prepare(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        partition_of: dict[str, str],
        written: list[str],
        unsynced: list[int] | None,
        internaldate: float | None = None,
    ) -> _Delivery:
        """A message staged once per partition: written and fsynced without `unsynced`
        (`deliver`, whose callers' fsyncs overlap), else written and left open there for one
        round of fsyncs (`deliver_batch`)."""
        results: list[AppendedMessage | StoreError | None] = [None] * len(targets)
        stages: list[str | None] = [None] * len(targets)
        shared: dict[str, str | StoreError] = {}
        guid = hashlib.sha1(content).hexdigest()
        for i, target in enumerate(targets):
            partition = partition_of.get(target.mailbox)
            if partition is None:
                results[i] = MailboxNotFound(f"mailbox {target.mailbox!r} does not exist")
                continue
            staged = shared.get(partition) if self._spool.single_instance else None
            if staged is None:
                staged = self._stage(partition, content, guid, unsynced)
                if isinstance(staged, str):
                    written.append(staged)
                if self._spool.single_instance:
                    shared[partition] = staged
            if isinstance(staged, StoreError):
                results[i] = staged
            else:
                stages[i] = staged
        header = raw_header_fields(header_block(content))
        return _Delivery(
            targets=targets,
            stages=stages,
            size=len(content),
            guid=guid,
            internaldate=self._spool.clock() if internaldate is None else internaldate,
            headers=searchable_form(content, header),
            listed=listed_form(content),
            sorting=sort_fields(content, header),
            results=results,
        )

    def deliver_all(
        self, messages: Sequence[tuple[bytes, DeliveryTarget, float | None]]
    ) -> list[AppendedMessage]:
        """MULTIAPPEND (sealmail.store.api.AtomicAppending): every message staged, then all
        linked and inserted in ONE transaction of their own, committed after the directory
        fsync, or rolled back as a whole (the links removed) on the first failure."""
        if not messages:
            return []
        name = messages[0][1].mailbox
        if any(target.mailbox != name for _, target, _ in messages):
            raise ValueError("deliver_all appends to one mailbox")
        with self._spool.reading() as conn:
            row = conn.execute("SELECT partition FROM mailboxes WHERE name = ?",
                               (name,)).fetchone()
        if row is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        written: list[str] = []
        try:
            deliveries = []
            for content, target, internaldate in messages:
                staged = self._stage(row[0], content)
                if isinstance(staged, StoreError):
                    raise staged
                written.append(staged)
                header = raw_header_fields(header_block(content))
                deliveries.append(_Delivery(
                    targets=[target], stages=[staged], size=len(content),
                    guid=hashlib.sha1(content).hexdigest(),
                    internaldate=self._spool.clock() if internaldate is None else internaldate,
                    headers=searchable_form(content, header), listed=listed_form(content),
                    sorting=sort_fields(content, header), results=[None], kept=set()))
            self._spool.fault("staged")
            with self._spool.index.turn():  # this process's writers queue (store.index)
                return self._commit_together(deliveries)
        finally:
            for path in written:
                with suppress(OSError):
                    os.unlink(path)

    def _commit_together(self, deliveries: list[_Delivery]) -> list[AppendedMessage]:
        conn = self._spool.index.writer()  # its page cache stays warm
        linked: list[str] = []
        try:
            self._spool.index.begin(conn)  # naps, not SQLite's sleeps (store.index)
            try:
                names = [delivery.targets[0].mailbox for delivery in deliveries]
                out = []
                writes = IndexWrites(conn, names)
                quotas = quota.BatchUsages(conn, names) if writes.quota_roots else None
                for delivery in deliveries:
                    stage = delivery.stages[0]
                    assert stage is not None
                    out.append(self._append(conn, writes, delivery, delivery.targets[0], stage,
                                            quotas, linked))
                writes.flush()
                fsync_directories({os.path.dirname(path) for path in linked})
                self._spool.fault("linked")
                conn.execute("COMMIT")
                self.checkpoints.committed(conn, len(linked))
                return out
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            for path in linked:  # debris at uid >= uidnext otherwise (see _commit_batch)
                with suppress(OSError):
                    os.unlink(path)
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, "delivery") from exc
            if isinstance(exc, OSError):
                raise os_error(exc, "delivery") from exc
            raise

    def _stage(
        self,
        partition: str,
        content: bytes,
        guid: str | None = None,
        unsynced: list[int] | None = None,
    ) -> str | StoreError:
        """Write and fsync a stage file; its name starts with our pid (see clean_stage_files)
        and ends with the content's guid when a COMMIT may keep it (store.disk.deferred).
        With `unsynced`, the fsync is the caller's: the file stays open there."""
        directory = self._spool.stage_directory(partition)
        path = f"{directory}/{os.getpid()}-{next(self._stage_counter)}-{secrets.token_hex(6)}"
        if guid is not None:
            path = f"{path}-{guid}"
        try:
            if unsynced is None:
                write_synced(path, content, os.O_EXCL)
            else:
                unsynced.append(write_unsynced(path, content))
        except OSError as exc:
            with suppress(OSError):
                os.unlink(path)
            return os_error(exc, f"cannot stage message on partition {partition}")
        return path

    def _commit_in_group(self, delivery: _Delivery) -> None:
        """Join the pending batch; commit it ourselves if no one is committing."""
        self._batches.join(delivery, self._lead)

    def _lead(self) -> None:
        """The batch is taken once the turn is ours: what arrived while another process
        committed comes along (sealmail.store.locks.CommitTurn)."""
        try:
            with self._turn.taken():
                batch = self._batches.batch()
                with self._spool.index.turn():  # this process's other writers (store.index)
                    self._commit_batch(batch)
        except StoreError as exc:  # the turn's lock file; _commit_batch raises no StoreError
            _fail_pending(self._batches.batch(), exc)

    def _commit_batch(self, batch: list[_Delivery]) -> None:
        conn = self._spool.index.writer()  # its page cache stays warm
        linked: list[str] = []
        try:
            self._spool.index.begin(conn)  # naps, not SQLite's sleeps (store.index)
            try:
                names = [target.mailbox for delivery in batch for target in delivery.targets]
                confirmed = self._confirmations.clear(conn)
                directories: set[str] = set()
                used: list[tuple[_Delivery, str]] = []  # the stage file of each copy linked
                unconfirmed_copies: dict[int, list[tuple[int, int]]] = {}  # round -> copies
                writes = IndexWrites(conn, names)
                quotas = quota.BatchUsages(conn, names) if writes.quota_roots else None
                for delivery in batch:
                    for i, target in enumerate(delivery.targets):
                        stage = delivery.stages[i]
                        if stage is None or delivery.results[i] is not None:
                            continue
                        before = len(linked)
                        try:
                            appended = self._append(
                                conn, writes, delivery, target, stage, quotas, linked
                            )
                        except StoreError as exc:
                            if len(linked) > before:
                                # Refused after its link and rows went in: they would commit
                                # while its recipient hears an error. The batch fails instead.
                                raise
                            delivery.results[i] = exc
                            continue
                        delivery.results[i] = appended
                        directories.add(linked[-1][: linked[-1].rindex("/")])
                        used.append((delivery, stage))
                        if delivery.round is not None:
                            row = writes.mailbox(target.mailbox)
                            assert row is not None  # _append found it
                            unconfirmed_copies.setdefault(delivery.round, []).append(
                                (row[0], appended.uid))
                writes.flush()
                for round_, copies in unconfirmed_copies.items():
                    unconfirmed.record(conn, round_, copies)
                # Before the COMMIT names their copies, the stage files' names must be durable:
                # deliver_batch's round makes them so alongside (`round`: the copies go in
                # `unconfirmed`); a `deliver` caller's stage directory is fsynced here, with
                # the mailbox directories fsynced after the reply (store.disk.deferred), or,
                # when that saves no fsync (one mailbox per partition), the mailboxes'
                # directories instead.
                unnamed = {os.path.dirname(stage) for delivery, stage in used
                           if delivery.round is None}
                deferring = len(directories) > len(unnamed)
                fsync_directories(unnamed if deferring else directories)
                self._spool.fault("linked")
                conn.execute("COMMIT")
                if deferring:
                    for delivery, stage in used:
                        delivery.kept.add(stage)
                    self._syncs.hold({stage for _, stage in used}, directories)
                self._spool.fault("committed")
                self.checkpoints.committed(conn, len(linked))
            except BaseException:
                self._confirmations.put_back(confirmed)
                # The links go first, while SQLite's write lock still keeps other writers from
                # drawing these uids: after the ROLLBACK an imapd's COPY or another process may
                # link its own message at the same name. A link left over (a crash here) is
                # debris at uid >= uidnext, which reconstruct or the next draw of it clears.
                for path in linked:
                    with suppress(OSError):
                        os.unlink(path)
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error):
                error: StoreError = sqlite_error(exc, "delivery")
            elif isinstance(exc, OSError):
                error = os_error(exc, "delivery")
            elif isinstance(exc, StoreError):
                error = exc
            else:
                error = StoreError(f"delivery failed: {exc!r}")
                error.__cause__ = exc
            _fail_pending(batch, error)
            if not isinstance(exc, Exception):
                raise

    def _append(
        self,
        conn: sqlite3.Connection,
        writes: IndexWrites,
        delivery: _Delivery,
        target: DeliveryTarget,
        stage: str,
        quotas: quota.BatchUsages | None,
        linked: list[str],
    ) -> AppendedMessage:
        row = writes.mailbox(target.mailbox)
        if row is None:
            raise MailboxNotFound(f"mailbox {target.mailbox!r} does not exist")
        mailbox_id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq = row[:7]
        directory = self._spool.directory_name(partition, uniqueid)
        if not stage.startswith(self._spool.stage_directory(partition) + "/"):
            # Deleted and re-created on another partition since we staged: let the client retry.
            raise StoreError(f"mailbox {name!r} moved to partition {partition!r}; try again")
        usage = None
        if quotas is not None and not target.ignore_quota:
            usage = quotas.usage(name)
            if usage is not None:
                if target.strict_quota:
                    quota.enforce(usage, delivery.size, 1)
                else:
                    quota.enforce(usage, 0, 0)
        uid, modseq = uidnext, highestmodseq + 1
        filename = f"{uid}."
        path = f"{directory}/{filename}"
        try:
            try:
                os.link(stage, path)
            except FileExistsError:
                # Debris of a delivery that never committed (uid >= uidnext): replace it.
                os.unlink(path)
                os.link(stage, path)
        except OSError as exc:
            raise os_error(exc, f"cannot store message in {name}") from exc
        linked.append(path)
        wanted = list(dict.fromkeys(target.flags)) if target.flags else []
        seen = None if SEEN not in wanted else seen_of(conn, mailbox_id, name, target.reader)
        if seen is not None:
            # The appending user does not own this mailbox: \Seen is theirs alone.
            wanted.remove(SEEN)
            save_seen(conn, mailbox_id, target.reader, seen.union([uid]))
        writes.add(
            row,
            (delivery.internaldate, delivery.size, delivery.guid, " ".join(wanted), filename,
             target.kept),
            (delivery.headers, delivery.listed, *delivery.sorting),
            len(delivery.targets) >= SHARED_FROM,
        )
        # The appender's \Recent claim in this commit (DeliveryTarget.claims_recent), on the
        # mark the index keeps; a reader with a mark of their own claims it after, as before.
        recent = (target.claims_recent and index_keeps_seen(name, target.reader)
                  and writes.claim_recent(row, uid, lambda: self._owner_mark(uniqueid)))
        warning = None
        if quotas is not None:
            quotas.appended(name, delivery.size)  # the next copy's check counts this one
            if usage is not None and target.quota_warn is not None:
                # Once the message is in: its warned mark commits with it (store.quota).
                warning = quotas.note_append(usage, delivery.size, target.quota_warn)
        return AppendedMessage(
            name, uidvalidity, uid, modseq, delivery.guid, delivery.size, warning, uniqueid,
            tuple(wanted), recent,
        )

    def _owner_mark(self, uniqueid: str) -> int:
        """The marks file's \\Recent mark of the index's reader (`claim_recent`'s question);
        one it cannot read counts as none: the appender then claims after the commit, as a
        session without `claims_recent` does, and meets the failure there."""
        try:
            return self._spool.recent.mark(uniqueid, OWNER)
        except StoreError:
            return 0

    def clean_stage_files(self) -> list[str]:
        """After a crash: the unconfirmed copies of processes that are gone checked (kept,
        re-linked or expunged: store.disk.unconfirmed); then those processes' stage files: the
        copies a COMMIT named are re-linked from them where missing, then they are removed
        (store.disk.deferred)."""
        try:
            fixes = unconfirmed.recover(self._spool)
        except (OSError, sqlite3.Error, StoreError) as exc:  # kept for the next open
            return [f"cannot recover unconfirmed copies yet: {exc}"]
        stale: list[tuple[str, Path]] = []
        for partition, path in sorted(self._spool.partitions.items()):
            directory = path / STAGE_DIRECTORY
            try:
                entries = list(directory.iterdir())
            except OSError:
                continue
            for entry in entries:
                pid_text = entry.name.split("-", 1)[0]
                if pid_text.isdigit() and unconfirmed.process_alive(int(pid_text)):
                    continue
                stale.append((partition, entry))
        return fixes + (recover_stage_files(self._spool, stale) if stale else [])


def _to_commit(delivery: _Delivery) -> bool:
    """Whether a copy of `delivery` is staged and not failed already."""
    return any(stage is not None and result is None
               for stage, result in zip(delivery.stages, delivery.results, strict=True))


def _fail_pending(batch: list[_Delivery], error: StoreError) -> None:
    """Nothing of `batch` was committed: every copy not refused already gets `error`."""
    for delivery in batch:
        for i, result in enumerate(delivery.results):
            if result is None or isinstance(result, AppendedMessage):
                delivery.results[i] = error


def partitions_of(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, str]:
    """Mailbox name -> its partition, for those of `names` that exist: one query per 500
    names, not one per recipient."""
    distinct = list(dict.fromkeys(names))
    found: dict[str, str] = {}
    for start in range(0, len(distinct), NAMES_PER_QUERY):
        chunk = distinct[start : start + NAMES_PER_QUERY]
        placeholders = ",".join("?" * len(chunk))
        found.update(conn.execute(
            f"SELECT name, partition FROM mailboxes WHERE name IN ({placeholders})", chunk
        ).fetchall())
    return found


def _final(
    results: list[AppendedMessage | StoreError | None],
) -> list[AppendedMessage | StoreError]:
    """A delivery's results once its commit is done: one for every target."""
    final: list[AppendedMessage | StoreError] = []
    for result in results:
        assert result is not None
        final.append(result)
    return final
