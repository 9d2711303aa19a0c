"""The console end to end in Debian's headless Chromium (chromium + chromium-driver, driven by
Selenium): a message queued for the store is deferred because the store's lmtpd is not running
(its LMTP socket is not there); an admin logs in, finds it by its recipient, starts lmtpd (the
fix), retries it, and sees it delivered: gone from the queue, and `status=sent` into the INBOX
in its trace.

The MTA runs in this process (RunningMta; the message is queued through cleanup in-process, as
pickup would, to spare starting smtpd), the store's lmtpd and `sealmail console` as
subprocesses, as an operator runs them. With SEALMAIL_CONSOLE_SCREENSHOTS=DIR the pages are saved
there (docs/console/*.png were made with SEALMAIL_CONSOLE_SCREENSHOTS=docs/console).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.mta.cleanup import cleanup_from_config, queue_message
from sealmail.mta.config import load_mta_config
from sealmail.mta.pickup import send_control
from sealmail.mta.queue import Queue, QueueName, RecipientRecord
from sealmail.proto.sasl import split_identity
from sealmail.store.backends import open_store

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason="needs Debian's chromium and chromium-driver"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
pytest.importorskip("h11", reason="the console needs h11 (the [console] extra)")
from selenium.webdriver.common.by import By  # noqa: E402

ADMIN_PASSWORD = "console-admin-pw"
MESSAGE = (b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: held up\r\n"
           b"Message-ID: <held-up@example.org>\r\n\r\nhello\r\n")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    directory = os.environ.get("SEALMAIL_CONSOLE_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(directory) / f"{name}.png"))


def text_of(browser: webdriver.Chrome, selector: str) -> str:
    """The element's text, "" while it is not there (or belongs to the page a click replaced:
    the caller waits and asks again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = browser.find_elements(By.CSS_SELECTOR, selector)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def shows(browser: webdriver.Chrome, selector: str, needle: str) -> str:
    """The element's text once it contains `needle` (a click returns before the next page
    has loaded, so every check after one waits for what it expects)."""
    wait_for(lambda: needle in text_of(browser, selector), 30,
             f"{needle!r} in {selector} (page: {browser.current_url})")
    return text_of(browser, selector)


def at(browser: webdriver.Chrome, url: str) -> None:
    wait_for(lambda: browser.current_url == url, 30, f"{url} (at {browser.current_url})")


def test_find_a_deferred_message_retry_it_and_see_it_delivered(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    extra = {"admins": "admin", "auth_failure_delay": "0", "servername": "mx.example.com"}
    store = SealmailInstance(tmp_path / "store", imapd_conf_extra=extra)
    store.write_config()
    config = load_imapd_conf(store.conf_path)
    SaslDB.from_config(config).set_password(split_identity("admin", "mx.example.com"),
                                            ADMIN_PASSWORD)
    with contextlib.closing(open_store(config)) as opened:
        opened.create_mailbox("user.alice")
        opened.set_quota("user.alice", 10240, 1000)
    mta, maillog = tmp_path / "mta", tmp_path / "maillog"
    mta.mkdir()
    (mta / "main.cf").write_text(
        f"queue_directory = {tmp_path}/queue\ndata_directory = {tmp_path}/data\n"
        "myhostname = mx.example.com\nmydestination = example.com\n"
        f"local_transport = lmtp:unix:{store.socket_path}\nmaillog_file = {maillog}\n"
        + mail_owner_opt_in())
    (mta / "master.cf").write_text("lmtp unix - - n - - lmtp\n")
    port = free_tcp_port()
    console_log = tmp_path / "console.log"
    with console_log.open("wb") as out:  # started first: it starts while the MTA defers
        console = subprocess.Popen(
            [*SEALMAIL, "console", "-c", str(mta), "-C", str(store.conf_path),
             "--listen", f"127.0.0.1:{port}", "-L", str(store.log), "-L", str(console_log)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with RunningMta(mta):
        main = load_mta_config(mta).main
        queue = Queue.from_config(main)
        queue_message(queue, cleanup_from_config(main), sender="bob@example.org",
                      recipients=[RecipientRecord("alice@example.com", "alice@example.com")],
                      content=MESSAGE, arrival=time.time(), protocol="ESMTP",
                      client_name="client.example.org")
        send_control(queue.control_socket, "wake")  # as pickup tells the queue manager
        wait_for(lambda: len(queue.ids(QueueName.DEFERRED)) == 1, what="the deferral")
        queue_id = queue.ids(QueueName.DEFERRED)[0]
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, console)
            base = f"http://127.0.0.1:{port}"
            browser.get(base + "/queue")
            assert browser.current_url == base + "/login"  # nothing without a login
            browser.find_element(By.ID, "user").send_keys("admin")
            browser.find_element(By.ID, "password").send_keys("wrong")
            browser.find_element(By.ID, "login").click()
            shows(browser, "#flash", "Login failed")
            browser.find_element(By.ID, "user").send_keys("admin")
            browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
            screenshot(browser, "login")
            browser.find_element(By.ID, "login").click()
            at(browser, base + "/queue")

            browser.find_element(By.ID, "q").send_keys("alice@")
            browser.find_element(By.ID, "search").click()
            shows(browser, "#queue", queue_id)
            row = browser.find_element(By.ID, f"row-{queue_id}")
            assert row.get_attribute("data-queue") == "deferred"
            assert "alice@example.com" in row.text and "bob@example.org" in row.text
            assert "No such file" in row.text or "connect" in row.text  # the deferral reason
            screenshot(browser, "queue-deferred")

            store.start()  # the cause fixed: lmtpd listens on the LMTP socket
            browser.find_element(By.ID, f"retry-{queue_id}").click()
            shows(browser, "#flash", "scheduled for immediate delivery")

            def delivered() -> bool:
                browser.get(base + f"/queue?q={queue_id}")
                return bool(browser.find_elements(By.ID, "empty"))

            wait_for(delivered, what="the retried message to leave the queue")
            assert store.message_count("alice") == 1
            assert store.running  # delivered by the lmtpd started above
            browser.get(base + "/trace?id=" + "%3Cheld-up%40example.org%3E")
            summary = shows(browser, "#summary", f"{queue_id}: alice@example.com: sent")
            assert "-> user.alice uid 1" in summary  # joined with lmtpd's delivery line
            assert "status=deferred" in text_of(browser, "#lines")
            screenshot(browser, "trace")

            browser.get(base + "/activity")
            shows(browser, "#totals", "1 sent, 1 deferred")
            assert browser.find_elements(By.CSS_SELECTOR, "svg polyline")
            screenshot(browser, "activity")
            browser.get(base + "/auth")
            shows(browser, "#failures", "admin")  # the wrong password, from -L
            screenshot(browser, "auth-failures")
            browser.get(base + "/users")
            shows(browser, "#users", "alice")
            assert "10240" in text_of(browser, "#quota")  # sealmail quota's report
            screenshot(browser, "users")
            browser.find_element(By.ID, "logout").click()
            at(browser, base + "/login")
            browser.get(base + "/queue")
            at(browser, base + "/login")
        finally:
            console.terminate()
            console.wait(30)
            store.stop()
    assert ADMIN_PASSWORD not in console_log.read_text()
