"""The web console, driven end to end in Debian's headless Chromium against the real broker.

What it proves: records produced with confluent-kafka appear in the console's topic list and
message browser exactly as produced (offsets, ISO timestamps, keys, UTF-8 values, headers, a
tombstone, a binary value shown in hex, paging through next_offset, starting at a timestamp);
a batch the broker cannot decode is shown as a warning row, naming its offsets and the error,
between the records around it; a JSON API error reaches the error banner; internal topics stay
hidden until asked for; a group member's assignment is shown per topic; and a consumer group's
per-partition lag shown by the page follows new records and new commits from the live stats
stream, without the page being reloaded.

Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`; scripts/test installs
them). Selenium is given both paths, so Selenium Manager never downloads a browser or driver.
Screenshots land in target/console.png (group view with the live charts),
target/console-topics.png (topic list) and target/console-messages.png (message browser).
"""

import datetime
import os
import pathlib

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from test_admin_api import produce_raw, undecodable_batch

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30
TOPIC = "console-orders"
# A one-partition topic with a batch the broker cannot decode between two good records.
DAMAGED = "console-damaged"
GROUP = "console-readers"
BASE_TS = 1_700_000_000_000
BINARY = bytes([0x00, 0xFF, 0xDE, 0xAD, 0xBE, 0xEF])  # 0xff is never valid UTF-8

# (key, value, headers) produced to partition 0 in this order, so record i has offset i and
# timestamp BASE_TS + i * 1000.
RECORDS = [
    (b"user-1", b"hello console", []),
    (b"user-2", b'{"amount": 42}', [("trace-id", b"abc-123"), ("source", b"console-test")]),
    (None, BINARY, []),
    (b"user-1", None, []),  # a tombstone
    ("naïve-✓".encode(), "grüße aus sluice".encode(), []),
]


def iso(ms):
    """A timestamp as JavaScript's Date.toISOString() writes it."""
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def produce(broker, records, first_index, topic=TOPIC):
    """Produces (key, value, headers) records to partition 0 and waits for every ack."""
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i, (k, v, hdrs) in enumerate(records, start=first_index):
        p.produce(topic, key=k, value=v, headers=hdrs or None, partition=0,
                  timestamp=BASE_TS + i * 1000,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(WAIT_S) == 0, "records still queued after flush"
    assert errors == [], errors


def commit(consumer, offset):
    consumer.commit(offsets=[TopicPartition(TOPIC, 0, offset)], asynchronous=False)


@pytest.fixture
def chrome():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver "
                        "(scripts/test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, what, condition):
    """Waits up to WAIT_S for `condition(driver)` to return something truthy and returns it.
    The console redraws rows from live data, so a vanished element just means "look again"."""
    return WebDriverWait(
        driver, WAIT_S, poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, f"timed out after {WAIT_S}s waiting for {what}")


def css(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector)


def text_is(selector, expected):
    """A wait condition: the element's visible text equals `expected`."""
    return lambda d: css(d, selector).text.strip() == expected


def read_rows(driver):
    """The message rows on the page now, as dicts of their cells."""
    return [{
        "offset": int(r.get_attribute("data-offset")),
        "timestamp": r.find_element(By.CSS_SELECTOR, '[data-testid="msg-timestamp"]').text,
        "key": r.find_element(By.CSS_SELECTOR, '[data-testid="msg-key"]'),
        "value": r.find_element(By.CSS_SELECTOR, '[data-testid="msg-value"]'),
        "headers": {h.get_attribute("data-key"): h.text
                    for h in r.find_elements(By.CSS_SELECTOR, '[data-testid="msg-header"]')},
    } for r in driver.find_elements(By.CSS_SELECTOR, '[data-testid="message-row"]')]


def offsets_shown(driver):
    return [r["offset"] for r in read_rows(driver)]


def message_rows(driver, count):
    """Waits for exactly `count` message rows and returns them."""
    return wait(driver, f"{count} message rows",
                lambda d: (rows := read_rows(d)) and len(rows) == count and rows)


def screenshot(driver, path):
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"


def test_console_shows_topics_messages_and_live_group_lag(broker, chrome):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 2, 1)])[TOPIC].result(WAIT_S)
    produce(broker, RECORDS, 0)
    driver = chrome
    console = broker.admin_url + "/"
    shots = ROOT / "target"
    shots.mkdir(exist_ok=True)

    # -- topic list: the new topic, its partition and message counts ----------------------
    driver.get(console)
    row = f'[data-testid="topic-row"][data-topic="{TOPIC}"]'
    wait(driver, "the topic row", lambda d: css(d, row))
    wait(driver, "the message count", text_is(row + ' [data-testid="topic-messages"]',
                                               str(len(RECORDS))))
    assert css(driver, row).find_elements(By.TAG_NAME, "td")[1].text == "2"
    # Throughput needs two stats events: a rate, not "—", means the stream reached the table.
    wait(driver, "a bytes-in rate", lambda d: css(d, row + ' [data-testid="topic-bytes-in"]')
         .text.endswith("/s"))
    wait(driver, "the cluster id in the header",
         lambda d: css(d, '[data-testid="cluster-id"]').text not in ("", "…"))
    wait(driver, "readiness", text_is('[data-testid="readiness"]', "ready"))
    screenshot(driver, shots / "console-topics.png")

    # -- topic view, reached by clicking the row --------------------------------------------
    css(driver, row + " a").click()
    p0 = '[data-testid="partition-row"][data-partition="0"]'
    wait(driver, "partition 0's high watermark",
         text_is(p0 + ' [data-testid="high-watermark"]', str(len(RECORDS))))
    assert css(driver, p0 + ' [data-testid="log-start"]').text == "0"

    # -- message browser: every record as produced ------------------------------------------
    css(driver, p0 + " a").click()
    rows = message_rows(driver, len(RECORDS))
    assert [r["offset"] for r in rows] == list(range(len(RECORDS)))
    assert [r["timestamp"] for r in rows] == [iso(BASE_TS + i * 1000) for i in range(len(RECORDS))]
    assert rows[0]["key"].text == "user-1"
    assert rows[0]["value"].text == "hello console"
    assert rows[1]["value"].text == '{"amount": 42}'
    assert rows[1]["headers"] == {"trace-id": "trace-id: abc-123", "source": "source: console-test"}
    assert rows[2]["key"].text == "null"
    binary = rows[2]["value"].find_element(By.CSS_SELECTOR, "[data-hex]")
    assert binary.get_attribute("data-hex") == BINARY.hex()
    assert "".join(binary.text.split()).endswith(BINARY.hex()), binary.text
    assert rows[3]["value"].text == "null"
    assert rows[4]["key"].text == "naïve-✓"
    assert rows[4]["value"].text == "grüße aus sluice"

    css(driver, '[data-testid="display-hex"]').click()
    wait(driver, "keys in hex",
         lambda d: "".join(read_rows(d)[0]["key"].text.split()) == b"user-1".hex())
    assert "".join(read_rows(driver)[4]["value"].text.split()) == "grüße aus sluice".encode().hex()
    css(driver, '[data-testid="display-text"]').click()
    wait(driver, "keys as text again", lambda d: read_rows(d)[0]["key"].text == "user-1")
    screenshot(driver, shots / "console-messages.png")

    # Paging by next_offset, two records a page, then starting at a timestamp.
    driver.get(console + f"#/topics/{TOPIC}/0/messages?offset=0&limit=2")
    wait(driver, "the first page", lambda d: offsets_shown(d) == [0, 1])
    css(driver, '[data-testid="page-newer"]').click()
    wait(driver, "the newer page", lambda d: offsets_shown(d) == [2, 3])
    css(driver, '[data-testid="page-older"]').click()
    wait(driver, "the older page", lambda d: offsets_shown(d) == [0, 1])
    driver.get(console + f"#/topics/{TOPIC}/0/messages?timestamp={BASE_TS + 2500}&limit=10")
    wait(driver, "records from a timestamp", lambda d: offsets_shown(d) == [3, 4])
    # The form's datetime input is local time, like the browser's, which runs on this machine.
    Select(css(driver, '[data-testid="start-mode"]')).select_by_value("timestamp")
    local = datetime.datetime.fromtimestamp((BASE_TS + 2000) / 1000).strftime("%Y-%m-%dT%H:%M:%S")
    driver.execute_script("arguments[0].value = arguments[1];",
                          css(driver, '[data-testid="start-timestamp"]'), local)
    css(driver, '[data-testid="load-messages"]').click()
    wait(driver, "records from the datetime input", lambda d: offsets_shown(d) == [2, 3, 4])
    assert f"timestamp={BASE_TS + 2000}" in driver.current_url

    # -- a batch that cannot be decoded: a warning row between the records around it ---------
    admin.create_topics([NewTopic(DAMAGED, 1, 1)])[DAMAGED].result(WAIT_S)
    produce(broker, [(b"k", b"before the damage", [])], 0, topic=DAMAGED)
    assert produce_raw(broker, DAMAGED, 0, undecodable_batch(3, BASE_TS + 1000)) == 1
    produce(broker, [(b"k", b"after the damage", [])], 4, topic=DAMAGED)
    driver.get(console + f"#/topics/{DAMAGED}/0/messages")
    skipped = '[data-testid="skipped-row"]'
    wait(driver, "the skipped batch", lambda d: css(d, skipped))
    rows = message_rows(driver, 2)
    assert [(r["offset"], r["value"].text) for r in rows] == \
        [(0, "before the damage"), (4, "after the damage")]
    (bad,) = driver.find_elements(By.CSS_SELECTOR, skipped)
    assert (bad.get_attribute("data-base-offset"), bad.get_attribute("data-last-offset")) == \
        ("1", "3")
    assert bad.is_displayed()
    assert bad.find_element(By.CSS_SELECTOR, '[data-testid="skipped-offsets"]').text == \
        "offsets 1–3"
    assert bad.find_element(By.CSS_SELECTOR, '[data-testid="skipped-error"]').text.strip()
    order = [r.get_attribute("data-testid") for r in
             css(driver, '[data-testid="messages-table"] tbody').find_elements(By.TAG_NAME, "tr")]
    assert order == ["message-row", "skipped-row", "message-row"], order
    notice = css(driver, '[data-testid="messages-notice"]')
    assert notice.is_displayed() and "could not be decoded" in notice.text, notice.text

    # -- a JSON error from the API lands in the banner --------------------------------------
    driver.get(console + "#/topics/no-such-topic")
    wait(driver, "the error banner", lambda d: css(d, '[data-testid="error-banner"]').is_displayed()
         and "not_found" in css(d, '[data-testid="error-banner"]').text)

    # -- consumer group: lag follows new records and commits, live --------------------------
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([TOPIC])
        wait(driver, "the consumer's assignment",
             lambda _: consumer.poll(0.2) is not None or consumer.assignment())
        commit(consumer, 2)  # 5 records, 2 consumed: lag 3

        driver.get(console + "#/groups")
        group_row = f'[data-testid="group-row"][data-group="{GROUP}"]'
        wait(driver, "the group's total lag", text_is(group_row + ' [data-testid="group-lag"]', "3"))
        css(driver, group_row + " a").click()
        lag = f'[data-testid="lag"][data-topic="{TOPIC}"][data-partition="0"]'
        wait(driver, "partition 0's lag", text_is(lag, "3"))
        # One consumer holds both partitions: one line for the topic, partitions listed.
        wait(driver, "the member and its assignment",
             text_is('[data-testid="member-row"] [data-testid="member-assignment"]'
                     f'[data-topic="{TOPIC}"]', f"{TOPIC}: 0, 1"))
        assert len(driver.find_elements(By.CSS_SELECTOR,
                                        '[data-testid="member-assignment"]')) == 1

        # A reload would drop this marker; the updates below must arrive without one.
        driver.execute_script("window.__sluiceNoReload = true;")
        before = int(css(driver, '[data-testid="last-update"]').get_attribute("data-time-ms"))
        produce(broker, [(b"later", f"record {i}".encode(), []) for i in range(4)], len(RECORDS))
        wait(driver, "lag after 4 more records", text_is(lag, "7"))
        commit(consumer, 8)
        wait(driver, "lag after committing offset 8", text_is(lag, "1"))
        wait(driver, "the total lag from the stats stream",
             text_is('[data-testid="group-total-lag"]', "1"))
        assert driver.execute_script("return window.__sluiceNoReload === true;"), "the page reloaded"
        after = int(css(driver, '[data-testid="last-update"]').get_attribute("data-time-ms"))
        assert after > before, "no stats event arrived while the lag changed"

        # Both charts plot points from the stream (the lag chart has seen 3, 7 and 1).
        for chart in ("chart-bytes", "chart-lag"):
            wait(driver, f"points on {chart}",
                 lambda d, chart=chart: int(css(d, f'[data-testid="{chart}"]').get_attribute("data-points") or 0)
                 >= 2)
        screenshot(driver, shots / "console.png")
    finally:
        consumer.close()

    # -- internal topics stay hidden until the toggle is on ---------------------------------
    driver.get(console + "#/topics")
    offsets_row = '[data-testid="topic-row"][data-topic="__consumer_offsets"]'
    wait(driver, "the topic row", lambda d: css(d, row))
    assert driver.find_elements(By.CSS_SELECTOR, offsets_row) == []
    css(driver, '[data-testid="toggle-internal"]').click()
    wait(driver, "__consumer_offsets after the toggle", lambda d: css(d, offsets_row))
