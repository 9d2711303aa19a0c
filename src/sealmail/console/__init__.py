"""The web console (`sealmail console`): the queue, a message's trace, users and quotas, failed
logins and activity plots, behind a login of imapd.conf's admins. See docs/console.md.

app.py routes and guards requests (sessions.py, login.py); views.py builds each page from the
queue (queue_actions.py), the logs (logs.py, svg.py) and the store; pages.py is the HTML. The
HTTP server is sealmail.server.http (h11 over asyncio).
"""
