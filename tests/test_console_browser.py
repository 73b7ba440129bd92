"""fakeiot's web console in a real headless browser (Debian's chromium, driven by Selenium through
Debian's chromedriver): create a Thing, watch a charge point's frames arrive live, read its shadow.

Skipped when chromium or chromedriver is missing, unless REQUIRE_CHROMIUM=1 (CI sets it).  No
browser or driver is ever downloaded: the driver's path is given, and Selenium Manager runs
offline (``SE_OFFLINE``).  Screenshots are saved under the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from fakeiot import FakeIot
from gateway.app import RunningGateway
from gateway.chargepoint import connect, heartbeat

from .test_gateway_loop import boot
from .test_rules import HEARTBEAT_RULE

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20.0  # seconds any one browser condition may take

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    MISSING = None
except ImportError:  # pragma: no cover - selenium is in the test extra
    MISSING = "selenium is not installed (pip install -e '.[test]')"
if MISSING is None and not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    MISSING = f"{CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)"
if MISSING and os.environ.get("REQUIRE_CHROMIUM") == "1":
    raise RuntimeError(f"REQUIRE_CHROMIUM=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


async def in_browser(function: Callable[[], T]) -> T:
    """Blocking Selenium calls run in a thread: the gateway shares this test's Trio loop."""
    return await trio.to_thread.run_sync(function)


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
        condition, message=f"timed out waiting for {what}"
    )


def text_of(driver: WebDriver, selector: str) -> str:
    return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, selector))


async def test_console_in_a_browser(
    fakeiot: FakeIot, aws: Any, gateway: RunningGateway, browser: WebDriver, tmp_path: Path
) -> None:
    base = fakeiot.api_url
    await in_browser(
        lambda: aws[0].create_topic_rule(
            ruleName="chargePointHeartbeat", topicRulePayload=HEARTBEAT_RULE
        )
    )

    def create_thing() -> None:
        browser.get(f"{base}/console/things")
        browser.find_element(By.ID, "thing-name").send_keys("CP1")
        browser.find_element(By.CSS_SELECTOR, "#create-thing button[type=submit]").click()
        wait_until(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-thing="CP1"]'),
            "CP1 in the list",
        )
        assert "Thing created." in browser.page_source
        browser.save_screenshot(str(tmp_path / "things.png"))

    await in_browser(create_thing)
    assert (await in_browser(lambda: aws[0].describe_thing(thingName="CP1")))["thingName"] == "CP1"

    def watch_mqtt() -> None:
        browser.get(f"{base}/console/mqtt?filter=%2B/in,%2B/out")
        wait_until(
            browser,
            lambda d: d.find_element(By.ID, "status").text.startswith("subscribed"),
            "the stream",
        )

    await in_browser(watch_mqtt)
    async with connect(gateway.url, "CP1") as cp:
        await cp.call(*boot())
        await cp.call(*heartbeat())
        await cp.call(*heartbeat())

        def frames_arrive() -> None:
            wait_until(
                browser,
                lambda d: (
                    "BootNotification" in text_of(d, "#frames")
                    and text_of(d, "#frames").count('"Heartbeat"') >= 2
                ),
                "the BootNotification and two Heartbeats in the MQTT view",
            )
            frames = text_of(browser, "#frames")
            assert "CP1/in" in frames and "CP1/out" in frames and "SN-1" in frames
            browser.save_screenshot(str(tmp_path / "mqtt.png"))

        await in_browser(frames_arrive)

        def hostile_payload_stays_text() -> None:
            browser.find_element(By.ID, "pub-topic").send_keys("CONSOLE/in")
            hostile = "<img src=x onerror=\"document.title='pwned'\">"
            browser.find_element(By.ID, "pub-payload").send_keys(hostile)
            browser.find_element(By.CSS_SELECTOR, "#publish button[type=submit]").click()
            wait_until(browser, lambda d: hostile in text_of(d, "#frames"), "the published frame")
            assert browser.find_element(By.ID, "pub-result").text == "done"
            assert browser.find_elements(By.CSS_SELECTOR, "#frames img") == []
            assert browser.title != "pwned"

        await in_browser(hostile_payload_stays_text)

        def shadow_and_tables() -> None:
            browser.get(f"{base}/console/things/CP1")
            wait_until(
                browser, lambda d: "SN-1" in d.find_element(By.ID, "shadow").text, "the shadow"
            )
            assert '"serialNumber": "SN-1"' in browser.find_element(By.ID, "shadow").text
            browser.save_screenshot(str(tmp_path / "shadow.png"))
            browser.get(f"{base}/console/heartbeats")
            assert "CP1" in browser.find_element(By.ID, "items").text
            browser.get(f"{base}/console/clients")
            assert "CP1" in browser.find_element(By.ID, "connected").text
            assert "connected" in browser.find_element(By.ID, "presence").text
            browser.save_screenshot(str(tmp_path / "clients.png"))

        await in_browser(shadow_and_tables)

    def bad_filter_is_refused() -> None:
        browser.get(f"{base}/console/mqtt?filter=a%2B")
        wait_until(
            browser,
            lambda d: d.find_element(By.ID, "status").text.startswith("refused"),
            "the refusal of filter a+",
        )

    await in_browser(bad_filter_is_refused)
    for name in ("things", "mqtt", "shadow", "clients"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    if os.environ.get("CONSOLE_SCREENSHOT_TO"):  # how docs/images/console-mqtt.png is made
        shutil.copy(tmp_path / "mqtt.png", os.environ["CONSOLE_SCREENSHOT_TO"])
