"""The web UI in a real browser: headless Chromium, driven by selenium, against the dev server.

The dev server (``python -m actors dev``) runs as a process: a nats-server,
the orchestrator, a worker for the example activities and the API with its
UI, with a token. The tests do what a person does: sign in, find an
instance with the filters, open it, read its timeline, approve a waiting
refund with a signal, cancel an order and watch its compensations appear,
send a signal with bad JSON and read the error, pause and resume an
instance, retry a failed one, trigger a schedule, and be refused without
the token. Every page they visit is saved as a PNG (``ACTORS_UI_SCREENSHOTS``
names the folder; ``docs/ui/`` holds the ones ``docs/ui.md`` shows).

They need Debian's ``chromium`` and ``chromium-driver``: without them the
tests skip, unless ``CI`` is set, where they fail (``.ci/run`` installs
them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from devserver import Dev, start_dev, stop_dev
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from transport import open_transport

pytestmark = pytest.mark.jetstream

TOKEN = "ui-browser-token"
#: Seconds a page may take to show what a test waits for (the engine, then a poll).
WAIT = 30


def _chromium() -> tuple[str, str] | None:
    """The Chromium binary and its driver, if both are installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return None if browser is None or driver is None else (browser, driver)


def _need_chromium() -> tuple[str, str]:
    found = _chromium()
    if found is not None:
        return found
    reason = "no chromium and chromedriver (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, and the web UI's browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """The dev server, with the example definitions and a few instances to look at."""
    _need_chromium()
    server = start_dev(tmp_path_factory.mktemp("ui") / "data", "--no-examples", "--token", TOKEN)
    try:
        api = httpx.Client(
            base_url=server.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        with api:
            large = [{"sku": "apple", "quantity": 60}, {"sku": "melon", "quantity": 5}]
            starts: list[tuple[str, dict[str, Any]]] = [
                ("refund", {"id": "ui-find-1", "input": {"order_id": "r-0", "items": large}}),
                ("refund", {"id": "ui-refund-1", "input": {"order_id": "r-1", "items": large}}),
                (
                    "order",
                    {
                        "id": "ui-order-1",
                        "input": {"order_id": "o-1", "items": large, "card": "visa"},
                    },
                ),
                (
                    "order",
                    {
                        "id": "ui-order-2",
                        "input": {"order_id": "o-2", "items": large, "card": "visa"},
                    },
                ),
            ]
            starts += [("count", {"id": f"ui-count-{n}", "input": {"count": n}}) for n in range(3)]
            for workflow_type, body in starts:
                response = api.post(f"/workflows/{workflow_type}", json=body)
                assert response.status_code == 201, response.text
        # And a message the orchestrator cannot read, for the dead letters page.
        trio.run(_publish, server.nats_url, "workflow.start.count", b"\xff\x00 not a start")
        yield server
    finally:
        stop_dev(server)


async def _publish(url: str, subject: str, data: bytes) -> None:
    async with open_transport(url) as transport:
        await transport.publish(subject, data)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go."""
    folder = os.environ.get("ACTORS_UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def chromium(dev: Dev) -> Iterator[WebDriver]:
    """One headless Chromium for the module (starting one costs a second or two)."""
    binary, driver_path = _need_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver, dev: Dev) -> Iterator[WebDriver]:
    """The browser as a new visitor: no cookies (so not signed in), an empty log."""
    chromium.get(dev.api_url + "/health")
    chromium.delete_all_cookies()
    chromium.get_log("browser")
    yield chromium
    # No page broke a rule of its Content-Security-Policy or failed a script
    # (answers of 4xx, which tests ask for, are the network's entries).
    severe = [
        entry
        for entry in chromium.get_log("browser")
        if entry["level"] == "SEVERE" and entry["source"] != "network"
    ]
    assert not severe, severe


def shoot(browser: WebDriver, shots: Path, name: str, width: int = 1280) -> None:
    """Save the whole page, ``width`` pixels wide, as ``name.png``."""
    browser.set_window_size(width, 900)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(int(height) + 120, 4000))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(shots / f"{name}.png"))
    browser.set_window_size(1280, 900)


def wait_for(browser: WebDriver, condition: Any, message: str) -> Any:
    try:
        return WebDriverWait(browser, WAIT).until(condition)
    except TimeoutException:
        raise AssertionError(f"{message}; the page shows:\n{browser.page_source[:4000]}") from None


def sign_in(browser: WebDriver, dev: Dev, page: str = "/ui/") -> None:
    browser.get(dev.api_url + page)
    find(browser, "#token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    wait_for(browser, expected_conditions.url_to_be(dev.api_url + page), "not signed in")


def find(browser: WebDriver, css: str) -> WebElement:
    """The element, once the page shows it (a click's page may still be on its way)."""
    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    element: WebElement = wait_for(browser, located, f"no {css} on the page")
    return element


def text_of(browser: WebDriver, css: str) -> str:
    return str(find(browser, css).text)


def test_refused_without_the_token(browser: WebDriver, dev: Dev, shots: Path) -> None:
    browser.get(dev.api_url + "/ui/instances/ui-refund-1")
    assert browser.current_url == dev.api_url + "/ui/login?next=/ui/instances/ui-refund-1"
    assert "ui-refund-1" not in browser.find_element(By.TAG_NAME, "main").text
    find(browser, "#token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    assert text_of(browser, "#login-error") == "That is not the API token."
    shoot(browser, shots, "login")
    # The API behind it refuses the browser too.
    browser.get(dev.api_url + "/workflows")
    assert "Unauthorized" in browser.page_source
    # With the token, the page asked for first.
    browser.get(dev.api_url + "/ui/login?next=/ui/instances/ui-refund-1")
    find(browser, "#token").send_keys(TOKEN)
    find(browser, "#token").submit()
    wait_for(browser, expected_conditions.title_contains("ui-refund-1"), "not let in")


def test_find_an_instance_with_the_filters_and_read_its_timeline(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    sign_in(browser, dev)
    shoot(browser, shots, "instances")
    Select(browser.find_element(By.ID, "f-type")).select_by_visible_text("refund")
    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("running")
    browser.find_element(By.ID, "f-prefix").send_keys("ui-find-")
    browser.find_element(By.ID, "f-prefix").submit()
    wait_for(browser, expected_conditions.url_contains("type=refund"), "the filters were not sent")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.instances tbody tr")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == ["ui-find-1"]
    assert text_of(browser, "[data-status='running']") == "1"
    browser.find_element(By.LINK_TEXT, "ui-find-1").click()
    wait_for(browser, expected_conditions.title_contains("ui-find-1"), "the instance did not open")
    assert text_of(browser, "#status") == "running"
    # The timeline: the reservation's attempt, then the wait for the signal.
    timeline = browser.find_element(By.CSS_SELECTOR, "svg.timeline")
    labels = [label.text for label in timeline.find_elements(By.CSS_SELECTOR, "text.row-label")]
    assert labels[:2] == ["reserve", "approval"]
    browser.find_element(By.CSS_SELECTOR, "#timeline-h ~ details summary").click()
    table = text_of(browser, "#timeline-table")
    assert "attempt #1 reserve_stock" in table
    assert "signal wait approved" in table
    tree = text_of(browser, "#step-tree")
    assert "approval signal approved waiting" in tree
    assert "awaited" in browser.page_source
    shoot(browser, shots, "instance-waiting")


def test_a_signal_completes_a_waiting_instance_and_the_page_follows_it(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    sign_in(browser, dev, "/ui/instances/ui-refund-1")
    assert browser.find_element(By.ID, "signal-name").get_attribute("value") == "approved"
    browser.find_element(By.ID, "signal-payload").send_keys('{"by": "ann"}')
    browser.find_element(By.CSS_SELECTOR, "#signal-form button").click()
    assert "Send signal 'approved' to ui-refund-1?" in text_of(browser, "#question")
    shoot(browser, shots, "confirm")
    find(browser, "#confirm").click()
    assert text_of(browser, "#done") == "The signal was sent."
    # No reload: the page's live part follows the instance to its end.
    browser.execute_script("window.notReloaded = true")
    wait_for(
        browser,
        expected_conditions.text_to_be_present_in_element((By.ID, "status"), "completed"),
        "the instance did not complete on the page",
    )
    assert browser.execute_script("return window.notReloaded") is True
    assert '"approved_by": "ann"' in text_of(browser, "#output-json")
    shoot(browser, shots, "instance-completed")


def test_bad_json_in_a_signal_is_refused_with_its_error(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    sign_in(browser, dev, "/ui/instances/ui-order-2")
    browser.find_element(By.ID, "signal-payload").send_keys('{"by": }')
    browser.find_element(By.CSS_SELECTOR, "#signal-form button").click()
    error = text_of(browser, "#signal-error")
    assert error.startswith("payload is not valid JSON"), error
    # What was typed is kept, to be mended.
    assert browser.find_element(By.ID, "signal-payload").get_attribute("value") == '{"by": }'
    assert text_of(browser, "#status") == "running"
    shoot(browser, shots, "signal-error")


def test_cancel_and_see_the_compensations(browser: WebDriver, dev: Dev, shots: Path) -> None:
    sign_in(browser, dev, "/ui/instances/ui-order-1")
    wait_for(
        browser,
        expected_conditions.text_to_be_present_in_element((By.ID, "step-tree"), "waiting"),
        "the order did not come to wait for its approval",
    )
    browser.find_element(By.ID, "cancel-reason").send_keys("changed my mind")
    browser.find_element(By.CSS_SELECTOR, "#cancel-form button").click()
    find(browser, "#confirm").click()
    wait_for(
        browser,
        expected_conditions.text_to_be_present_in_element((By.ID, "status"), "cancelled"),
        "the order was not cancelled on the page",
    )
    wait_for(
        browser,
        lambda b: "reserve~undo" in b.find_element(By.CSS_SELECTOR, "svg.timeline").text,
        "no compensation on the timeline",
    )
    # Once the history holds the end, the page has it, and offers no action.
    wait_for(
        browser,
        lambda b: (
            "workflow.cancelled" in b.find_element(By.ID, "history").text
            and not b.find_elements(By.ID, "actions-h")
        ),
        "the history did not end, or the actions stayed",
    )
    tree = text_of(browser, "#step-tree")
    assert "reserve reserve_stock compensated" in tree
    assert "authorize authorize_card compensated" in tree
    assert "compensation completed" in text_of(browser, "#instance-live")
    shoot(browser, shots, "instance-cancelled")


def test_the_instances_table_follows_new_instances_without_a_reload(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    sign_in(browser, dev, "/ui/?prefix=ui-live-")
    assert "No instance matches" in text_of(browser, "#instances-live")
    browser.execute_script("window.notReloaded = true")
    response = httpx.post(
        f"{dev.api_url}/workflows/count",
        json={"id": "ui-live-1", "input": {"count": 0}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201
    wait_for(
        browser,
        lambda b: b.find_elements(By.LINK_TEXT, "ui-live-1"),
        "the new instance did not appear",
    )
    assert browser.execute_script("return window.notReloaded") is True
    # At phone width the table still reads.
    shoot(browser, shots, "instances-phone", width=390)


def test_keyboard_reaches_the_pages_and_the_filters(browser: WebDriver, dev: Dev) -> None:
    sign_in(browser, dev)

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to the content"
    focused = []
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        focused.append(
            browser.switch_to.active_element.get_attribute("id")
            or browser.switch_to.active_element.text
        )
    assert "Definitions" in focused
    assert "f-type" in focused


def test_open_a_definitions_diagram_and_compare_versions(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    sign_in(browser, dev, "/ui/definitions")
    shoot(browser, shots, "definitions")
    browser.find_element(By.LINK_TEXT, "order").click()
    wait_for(browser, expected_conditions.title_contains("order v3"), "the definition did not open")
    diagram = find(browser, "#diagram svg")
    steps = diagram.text
    for step in ("prepare", "reserve", "undo: release_stock", "approval", "deliver", "ship_line"):
        assert step in steps, steps
    assert "type: order" in text_of(browser, "#yaml")
    shoot(browser, shots, "definition")
    # A second version of count, compared with the first.
    response = httpx.post(
        f"{dev.api_url}/definitions",
        content=(
            "type: count\nversion: 2\nsteps:\n  - {id: first, activity: increment}\n"
            "  - {id: pause, sleep: 1}\n"
        ),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    browser.get(dev.api_url + "/ui/definitions/count/2")
    Select(find(browser, "#against")).select_by_visible_text("v1")
    find(browser, "#against").submit()
    diff = text_of(browser, "#diff")
    assert "+  sleep: 1.0" in diff or "+  sleep: 1" in diff, diff
    assert "-- id: second" in diff, diff
    shoot(browser, shots, "definition-diff")


def test_dead_letters_workers_and_api_docs(browser: WebDriver, dev: Dev, shots: Path) -> None:
    sign_in(browser, dev, "/ui/workers")
    assert "1 running" in text_of(browser, "#orchestrators")
    assert "increment" in text_of(browser, "#queues")
    assert "s ago" in text_of(browser, "#workers")  # the dev server's worker
    shoot(browser, shots, "workers")
    browser.find_element(By.LINK_TEXT, "Dead letters").click()
    wait_for(browser, expected_conditions.title_contains("Dead letters"), "no dead letters page")
    wait_for(
        browser,
        lambda b: (
            "malformed" in b.find_element(By.TAG_NAME, "main").text or b.refresh()
        ),  # the orchestrator writes the letter as it reads the message
        "no dead letter for the message the orchestrator could not read",
    )
    assert "workflow.start.count" in text_of(browser, "#letters")
    shoot(browser, shots, "deadletters")
    browser.find_element(By.LINK_TEXT, "API docs").click()
    wait_for(browser, expected_conditions.title_contains("API docs"), "no API docs page")
    shoot(browser, shots, "docs")
    # Try a call from the page: the answer shows under its form.
    section = find(browser, "#get--workflows-type_or_id")
    section.find_element(By.CSS_SELECTOR, "details.try summary").click()
    section.find_element(By.CSS_SELECTOR, "input[name=type_or_id]").send_keys("ui-count-0")
    section.find_element(By.CSS_SELECTOR, "input[name=token]").send_keys(TOKEN)
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    answer = section.find_element(By.CSS_SELECTOR, "output.answer")
    wait_for(browser, lambda _: answer.text.startswith("200"), "the call got no answer")
    assert '"id": "ui-count-0"' in answer.text


def test_pause_resume_and_retry_an_instance_and_visit_the_schedules(
    browser: WebDriver, dev: Dev, shots: Path
) -> None:
    api = httpx.Client(
        base_url=dev.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    with api:
        large = [{"sku": "apple", "quantity": 60}]
        for body in (
            {"id": "ui-pause-1", "input": {"order_id": "r-9", "items": large}},
            {"id": "ui-nocard-1", "input": {"order_id": "o-9", "items": large}},
        ):
            workflow_type = "refund" if body["id"] == "ui-pause-1" else "order"
            assert api.post(f"/workflows/{workflow_type}", json=body).status_code == 201
        created = api.post(
            "/schedules",
            json={
                "id": "nightly-count",
                "workflow": "count",
                "input": {"count": 1},
                "spec": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
            },
        )
        assert created.status_code == 201, created.text
    # Pause a refund waiting for its approval; the page shows who paused it and why.
    sign_in(browser, dev, "/ui/instances/ui-pause-1")
    browser.find_element(By.ID, "pause-reason").send_keys("checking the stock")
    browser.find_element(By.CSS_SELECTOR, "#pause-form button").click()
    assert "Pause ui-pause-1?" in text_of(browser, "#question")
    find(browser, "#confirm").click()
    assert text_of(browser, "#done") == "Pause requested."
    paused = text_of(browser, "#paused")
    assert "by web UI" in paused
    assert "checking the stock" in paused
    assert text_of(browser, "#paused-badge") == "paused"
    shoot(browser, shots, "instance-paused")
    browser.find_element(By.CSS_SELECTOR, "#resume-form button").click()
    find(browser, "#confirm").click()
    assert text_of(browser, "#done") == "Resume requested."
    assert not browser.find_elements(By.ID, "paused")
    assert browser.find_elements(By.ID, "pause-form")
    # An order without a card fails; retried from its first step, it shows run 2.
    browser.get(dev.api_url + "/ui/instances/ui-nocard-1")
    wait_for(
        browser,
        lambda b: b.find_elements(By.ID, "retry-form") or b.refresh(),
        "the order did not fail",
    )
    assert text_of(browser, "#run") == "1"
    Select(find(browser, "#retry-step")).select_by_visible_text("step prepare")
    browser.find_element(By.CSS_SELECTOR, "#retry-form button").click()
    assert "from step prepare, as run 2?" in text_of(browser, "#question")
    find(browser, "#confirm").click()
    assert text_of(browser, "#done") == "Retry requested."
    wait_for(
        browser,
        lambda b: b.find_element(By.ID, "run").text == "2" or b.refresh(),
        "the page did not show run 2",
    )
    # The schedules, from the navigation.
    browser.find_element(By.LINK_TEXT, "Schedules").click()
    wait_for(browser, expected_conditions.title_contains("Schedules"), "no schedules page")
    shoot(browser, shots, "schedules")
    browser.find_element(By.LINK_TEXT, "nightly-count").click()
    find(browser, "#trigger-form button").click()
    find(browser, "#confirm").click()
    run = find(browser, "#started-link").text
    # The scheduler starts the run and lists it: a reload shows it, linked.
    wait_for(
        browser,
        lambda b: (
            b.find_elements(By.CSS_SELECTOR, f"#runs a[href='/ui/instances/{run}']")
            or b.get(f"{dev.api_url}/ui/schedules/nightly-count")
        ),
        "the triggered run is not listed",
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#next-fires li")) == 5
    shoot(browser, shots, "schedule")
