"""The gallery in a real browser: Debian's headless Chromium, driven by Selenium through
chromium-driver, against a real gateway subprocess (offline: 12 placeholder entries).

It checks what only a browser can: that the 12 thumbnails were fetched and decoded
(`naturalWidth > 0`), that the search form narrows the grid, that the detail view shows the
full image, that the delete button (with its confirm dialog) removes the entry, and that with
an admin token the page asks for it once and keeps an HttpOnly, SameSite=Strict cookie.

It saves a screenshot of the grid in its tmp folder; with UPDATE_GALLERY_SCREENSHOT=1 it
also writes docs/gallery.png (the README's picture). Without the browser (a developer
machine without `apt-get install chromium chromium-driver`) it skips, saying so; in CI
(.ci/run installs both) a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import GatewayProcess
from tests.fakes.gateway_process import gateway_env

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parent.parent
T2I = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
TOKEN = "browser-admin-token-9f8e7d6c5b4a"
SIZES = [(1344, 768), (1024, 1024), (768, 1344), (1216, 832), (1536, 640), (832, 1216)]
SUBJECTS = [
    "a lighthouse on a cliff at dawn", "a fox asleep in autumn leaves",
    "a paper boat on a rainy street", "a desert observatory under stars",
    "a tram crossing a snowy bridge", "a koi pond seen from above",
    "a violin workshop with sawdust light", "a glacier cave glowing blue",
    "a night market selling lanterns", "a greenhouse full of ferns",
    "an old map of an imaginary island", "a hot air balloon over vineyards",
]  # fmt: skip
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
ALL_DECODED = """
const imgs = Array.from(document.querySelectorAll(arguments[0]));
imgs.forEach(i => i.scrollIntoView({block: "nearest"}));
return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
"""


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, DRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = (
        f"the real-browser gallery test needs {', '.join(missing)}: "
        "apt-get install -y chromium chromium-driver (.ci/run does)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a thing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=DRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def fill(gateway: GatewayProcess, count: int, headers: dict[str, str] | None = None) -> list[str]:
    """`count` entries with different prompts and sizes (offline placeholders)."""
    keys = []
    with httpx.Client(base_url=gateway.url, timeout=60, headers=headers) as client:
        for i, subject in enumerate(SUBJECTS[:count]):
            width, height = SIZES[i % len(SIZES)]
            body = {"text_prompts": [{"text": subject}], "width": width, "height": height,
                    "seed": 1000 + i}  # fmt: skip
            response = client.post(T2I, json=body)
            assert response.status_code == 200, response.text
            keys.append(response.headers["x-cache-key"])
    return keys


def wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def decoded(driver: Any, selector: str) -> bool:
    return bool(driver.execute_script(ALL_DECODED, selector))


def cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, "#grid li.card"))


def screenshot(driver: Any, path: Path) -> None:
    """The whole page, not just the window: the window is made as tall as the page."""
    for _ in range(3):  # a new size can move the layout: settle on the page's height
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        inner = int(driver.execute_script("return window.innerHeight"))
        if inner >= min(height, 4000):
            break
        outer = int(driver.get_window_size()["height"])
        driver.set_window_size(1280, min(height, 4000) + outer - inner)
    driver.execute_script("window.scrollTo(0, 0)")
    wait(driver, lambda d: decoded(d, "#grid img"))
    driver.save_screenshot(str(path))


def test_the_gallery_in_a_real_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    env = gateway_env(tmp_path / "cache", mode="offline")
    with GatewayProcess(env, log_dir=tmp_path) as gateway:
        keys = fill(gateway, 12)
        with httpx.Client(base_url=gateway.url, timeout=60) as client:  # a few hits
            for i in (0, 0, 3):
                width, height = SIZES[i % len(SIZES)]
                body = {"text_prompts": [{"text": SUBJECTS[i]}], "width": width,
                        "height": height, "seed": 1000 + i}  # fmt: skip
                assert client.post(T2I, json=body).headers["x-cache"] == "HIT"

        browser.get(f"{gateway.url}/gallery")
        assert browser.find_element(By.ID, "total-entries").text == "12"
        wait(browser, lambda d: decoded(d, "#grid img"))
        widths = browser.execute_script(
            "return Array.from(document.querySelectorAll('#grid img')).map(i => i.naturalWidth)"
        )
        assert len(widths) == 12 and all(w > 0 for w in widths)
        assert [c.get_attribute("data-key") for c in cards(browser)] == keys[::-1]
        shot = tmp_path / "gallery.png"
        screenshot(browser, shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("UPDATE_GALLERY_SCREENSHOT") == "1":
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copy(shot, ROOT / "docs" / "gallery.png")
        browser.set_window_size(1280, 900)

        # Search: typed into the form, sent with Enter.
        search = browser.find_element(By.NAME, "q")
        search.send_keys("violin workshop", Keys.ENTER)
        wait(browser, lambda d: "q=violin+workshop" in d.current_url)
        found = cards(browser)
        assert len(found) == 1
        assert found[0].find_element(By.CSS_SELECTOR, ".prompt").text == SUBJECTS[6]
        doomed = keys[6]
        assert found[0].get_attribute("data-key") == doomed

        # The detail view: the full image, decoded, and its fields.
        found[0].find_element(By.CSS_SELECTOR, "a.thumb").click()
        wait(browser, ec.url_contains(f"/gallery/entries/{doomed}"))
        wait(browser, lambda d: decoded(d, "img.full"))
        full_width = browser.execute_script(
            "return document.querySelector('img.full').naturalWidth"
        )
        assert full_width == SIZES[6 % len(SIZES)][0]
        assert browser.find_element(By.CSS_SELECTOR, "h1.prompt").text == SUBJECTS[6]
        download = browser.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
        with httpx.Client(timeout=60) as client:
            got = client.get(download)
        assert got.status_code == 200 and got.headers["content-disposition"].startswith(
            "attachment;"
        )
        assert "seed" in browser.find_element(By.CSS_SELECTOR, "table.fields").text

        # Delete: the confirm dialog, accepted; back to the search, which is now empty.
        browser.find_element(By.ID, "delete").click()
        alert = wait(browser, ec.alert_is_present())
        assert "Delete this entry" in alert.text
        alert.accept()
        wait(browser, lambda d: "deleted=" in d.current_url)
        assert "q=violin+workshop" in browser.current_url
        assert cards(browser) == []
        assert doomed[:16] in browser.find_element(By.ID, "deleted-note").text
        browser.get(f"{gateway.url}/gallery")
        wait(browser, lambda d: decoded(d, "#grid img"))
        assert len(cards(browser)) == 11
        assert doomed not in [c.get_attribute("data-key") for c in cards(browser)]
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            assert client.get(f"/cache/entries/{doomed}").status_code == 404
            assert client.get("/cache/stats").json()["entries"] == 11


def test_with_an_admin_token_the_browser_logs_in_once(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    env = gateway_env(tmp_path / "cache", mode="offline", admin_token=TOKEN)
    with GatewayProcess(env, log_dir=tmp_path) as gateway:
        keys = fill(gateway, 3)
        seen: list[str] = []

        browser.get(f"{gateway.url}/gallery?q=fox")
        wait(browser, ec.url_contains("/gallery/login"))
        seen.append(browser.current_url)
        assert cards(browser) == []
        field = browser.find_element(By.NAME, "token")
        assert field.get_attribute("type") == "password"
        field.send_keys("not the token")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, ".flash.error")))
        seen.append(browser.current_url)
        assert browser.get_cookies() == []

        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait(browser, lambda d: "/gallery?q=fox" in d.current_url)
        seen.append(browser.current_url)
        wait(browser, lambda d: decoded(d, "#grid img"))
        assert [c.get_attribute("data-key") for c in cards(browser)] == [keys[1]]

        (cookie,) = browser.get_cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/gallery" and TOKEN not in cookie["value"]
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly

        # Once: every page, thumbnail and image opens with the cookie alone.
        browser.get(f"{gateway.url}/gallery")
        wait(browser, lambda d: decoded(d, "#grid img"))
        thumb = browser.find_element(By.CSS_SELECTOR, "#grid img").get_attribute("src")
        cards(browser)[0].find_element(By.CSS_SELECTOR, "a.thumb").click()
        wait(browser, lambda d: decoded(d, "img.full"))
        seen.append(browser.current_url)
        with httpx.Client(timeout=60) as client:  # without the cookie: closed
            assert client.get(thumb).status_code == 401
            assert client.get(f"{gateway.url}/gallery").status_code == 401

        browser.find_element(By.CSS_SELECTOR, ".logout button").click()
        wait(browser, ec.url_contains("/gallery/login"))
        browser.get(f"{gateway.url}/gallery")
        wait(browser, ec.url_contains("/gallery/login"))
        seen.append(browser.current_url)
        assert all(TOKEN not in url for url in seen), seen
        assert TOKEN not in gateway.logs()
