"""End to end in a real browser: start the dashboard, change a timeout, see the run update.

Starts ``streamlit run dashboards/app.py`` on 127.0.0.1 (a free port), drives Debian's
chromium through its chromedriver (both installed by the project's set-up,
``scripts/ensure-chromium.sh``; the test is skipped with the reason when they are
missing), waits for the Tune page's first run, changes the client timeout of
``seed-collapse`` from 30 s to 3 s, and checks that the KPIs and the chart update. It
saves screenshots under ``out/screenshots/`` (``STORMSIM_DOCS_SCREENSHOTS=1`` also copies
them to ``docs/figures/`` for docs/dashboard.md) and writes the time from the change to
the updated chart to ``out/screenshots/timing.json``. Every wait is bounded; the app
process is ended by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHOTS = PROJECT / "out" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make setup)")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromedriver are needed (make setup installs Debian's)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    log = (PROJECT / "out" / "screenshots")
    log.mkdir(parents=True, exist_ok=True)
    with open(log / "streamlit.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(PROJECT / "dashboards" / "app.py"),
             "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with {proc.returncode}: see {log / 'streamlit.log'}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.3)
            else:
                pytest.fail("the dashboard did not answer within 90 s")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the page is still rendering
            last_error = exc
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_error})")


def metrics_text(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By
    out = {}
    for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        lines = [line for line in element.text.splitlines() if line.strip()]
        if len(lines) >= 2:
            out[lines[0]] = lines[1]
    return out


def idle(driver) -> bool:
    """No Streamlit run in progress (no 'Running' status widget, no spinner)."""
    from selenium.webdriver.common.by import By
    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]') and \
        not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSpinner"]')


def save(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    driver.save_screenshot(str(path))
    if os.environ.get("STORMSIM_DOCS_SCREENSHOTS") == "1":
        shutil.copy(path, PROJECT / "docs" / "figures" / name)
    return path


def test_change_a_timeout_and_see_the_run_update(app_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    browser.get(app_url)
    # the Tune page runs seed-collapse once on load: KPIs and the chart appear
    before = wait_for(lambda: (len(metrics_text(browser)) >= 6 and idle(browser)
                               and browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                               and metrics_text(browser)), 180, "the first run's KPIs and chart")
    assert any("Outcome" in label for label in before), before
    save(browser, "dashboard-tune.png")

    field = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Client timeout (s)"]'),
                     30, "the client timeout widget")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
    assert float(field.get_attribute("value")) == pytest.approx(30.0)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("3")
    changed_at = time.monotonic()
    field.send_keys(Keys.ENTER)
    after = wait_for(lambda: (idle(browser) and metrics_text(browser) != before and metrics_text(browser)),
                     180, "the KPIs to change after the new timeout")
    updated_s = time.monotonic() - changed_at
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"), 30, "the updated chart")
    assert after != before
    shot = save(browser, "dashboard-tune-changed.png")
    assert shot.stat().st_size > 10_000
    (SHOTS / "timing.json").write_text(json.dumps(
        {"widget_change_to_updated_chart_s": round(updated_s, 2), "before": before, "after": after}, indent=2))
    assert updated_s < 120


@pytest.mark.parametrize(("title", "shot"), [("Compare", "dashboard-compare.png"), ("Sweep", "dashboard-sweep.png"),
                                             ("Results", "dashboard-results.png")])
def test_every_page_renders_without_an_exception(app_url, browser, title, shot):
    from selenium.webdriver.common.by import By
    browser.get(app_url)
    link = wait_for(lambda: next(a for a in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
                                 if title in a.text), 60, f"the {title} link")
    link.click()
    wait_for(lambda: title.lower() in browser.current_url.lower() or
             browser.find_elements(By.CSS_SELECTOR, "h1"), 30, f"the {title} page")
    wait_for(lambda: idle(browser) and browser.find_elements(By.CSS_SELECTOR, "h1"), 240, f"the {title} page to settle")
    if title == "Compare":
        wait_for(lambda: idle(browser) and browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"), 240,
                 "the comparison chart")
    time.sleep(0.5)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), \
        browser.find_element(By.CSS_SELECTOR, '[data-testid="stException"]').text
    save(browser, shot)
