"""The playground page in a real headless Chromium, against a real `distilqa serve` process."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest
from distilqa.serving.process import ServerProcess
from distilqa.serving.server import playground_html

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUESTION = "Who founded the duchy?"
CONTEXT = "The duchy of Normandy was founded by Rollo, a Viking leader, in 911 after a treaty with the king."


@pytest.fixture(scope="module")
def server(tiny_roberta_dir, tmp_path_factory):
    with ServerProcess(tiny_roberta_dir, "--name", "tiny", log=tmp_path_factory.mktemp("pg") / "log") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def api_answer(server: ServerProcess, threshold: float) -> dict:
    body = {
        "instances": [{"question": QUESTION, "context": CONTEXT}],
        "parameters": {"null_score_diff_threshold": threshold},
    }
    request = urllib.request.Request(
        f"{server.url}/v1/models/tiny:predict", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())["predictions"][0]


def ask(browser, server, threshold: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/playground")
    assert "distilqa playground" in browser.title
    assert browser.find_element(By.ID, "model-name").text == "tiny"
    for element_id, value in (("question", QUESTION), ("context", CONTEXT), ("threshold", threshold)):
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    meta_before = browser.find_element(By.ID, "meta").text
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "result")))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "meta").text not in ("", meta_before))


def test_answer_is_highlighted_in_the_context(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    ask(browser, server, "1e9")  # a huge threshold: the random model must give a span
    expected = api_answer(server, 1e9)
    assert expected["answer"]
    marks = browser.find_elements(By.CSS_SELECTOR, "#highlighted mark")
    assert [m.text for m in marks] == [expected["answer"].strip()]
    assert browser.find_element(By.ID, "answer").text == expected["answer"].strip()
    assert browser.find_element(By.ID, "highlighted").text.replace("\n", " ").strip() == CONTEXT
    assert "score" in browser.find_element(By.ID, "meta").text
    browser.save_screenshot(str(tmp_path / "playground.png"))
    shutil.copy(tmp_path / "playground.png", os.environ.get("DISTILQA_SCREENSHOT", tmp_path / "copy.png"))
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def test_no_answer_is_shown_as_such(browser, server):
    from selenium.webdriver.common.by import By

    ask(browser, server, "-1e9")  # a threshold below every null score difference: always "no answer"
    assert api_answer(server, -1e9)["is_impossible"]
    assert browser.find_element(By.ID, "answer").text == "No answer in this context"
    assert browser.find_elements(By.CSS_SELECTOR, "#highlighted mark") == []


def test_server_errors_are_shown_not_swallowed(browser, server):
    from selenium.webdriver.common.by import By

    ask(browser, server, "not-a-number")  # Number("not-a-number") is NaN: JSON null, which the server rejects
    assert browser.find_element(By.ID, "answer").text == "Error"
    assert "null_score_diff_threshold" in browser.find_element(By.ID, "meta").text


def test_model_name_cannot_inject_markup():
    page = playground_html('</script><script>alert(1)</script>"&')
    assert "</script><script>alert(1)" not in page
    assert "&lt;/script&gt;" in page and "\\u003c/script>" in page
