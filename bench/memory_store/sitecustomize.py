"""Loaded only by `bench/imap_stress.py --memory-store` (this directory first on the daemons'
PYTHONPATH): master's imap worker opens the in-memory store (sealmail.store.memory, the tests'
verified fake) instead of the disk store, with the bench user's INBOX, so that imaptest measures
what the IMAP layer, the protocol core, the event loop and the sockets cost without the store's
SQLite, files and fsyncs: the floor under the disk store's figures. One worker only: a memory
store is one process's."""

import os
import sys

if os.environ.get("SEALMAIL_BENCH_MEMORY_STORE") and "--service imap" in " ".join(sys.argv):
    import sealmail.store.backends as backends
    from sealmail.store.memory import MemoryStore
    from sealmail.store.names import Namespace
    from sealmail.store.settings import store_settings

    def open_store(config):  # type: ignore[no-untyped-def]
        store = MemoryStore(store_settings(config))
        separator = config.hierarchy_separator
        user = os.environ["SEALMAIL_BENCH_MEMORY_STORE"]
        store.create_mailbox(Namespace(separator).to_internal(f"user{separator}{user}"))
        return store

    backends.open_store = open_store
