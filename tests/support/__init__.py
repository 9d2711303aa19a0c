"""Test support: private instances of real mail peers and of sealmail itself.

`peers` starts Debian's Postfix, Cyrus and Dovecot as throw-away instances on loopback and UNIX
sockets; `instance` does the same for a sealmail store and its `sealmail lmtpd`. Both are used by
the integration tests and by `bench/`.
"""
