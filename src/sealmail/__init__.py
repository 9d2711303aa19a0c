"""sealmail: a Postfix-like MTA and a sealed Cyrus-like IMAP/POP mail store."""

__version__ = "0.1.0"
