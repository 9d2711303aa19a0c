"""`python -m sealmail.mta.smtpd ...`: the master starts its smtpd processes so."""

from sealmail.mta.smtpd.worker import worker_main

raise SystemExit(worker_main())
