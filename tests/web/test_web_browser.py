"""The page in a real browser: headless Chromium loads what ``rnnkit serve`` serves on loopback, streams a sample,
colours it in the visualiser, shows the top-5 on hover, and leaves a screenshot.

The screenshot goes to ``$RNNKIT_SCREENSHOT`` when set (how docs/img/web.png is made, with ``RNNKIT_WEB_RUN`` naming
a real run directory to serve instead of the tiny one; see docs/web.md), else to the test's temporary folder.
"""

import json
import os
import urllib.request
from pathlib import Path

import pytest

WAIT = 30  # seconds any one thing may take to appear


@pytest.fixture(scope="module")
def page_server(request, serve_run):
    """The session's tiny server, or ``rnnkit serve $RNNKIT_WEB_RUN`` for the docs screenshot."""
    run = os.environ.get("RNNKIT_WEB_RUN")
    if not run:
        yield request.getfixturevalue("server")
        return
    with serve_run(run) as s:
        yield s


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=WAIT) as response:
        return json.loads(response.read())


def test_page_streams_a_sample_and_colours_it_by_a_unit(page_server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    wait = WebDriverWait(d, WAIT)
    js = d.execute_script
    d.get(page_server.url)
    wait.until(lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#units .unit-link"))  # the ranking on the model's sample

    prompt = "ROMEO:\n" if os.environ.get("RNNKIT_WEB_RUN") else "The "
    length = 300 if os.environ.get("RNNKIT_WEB_RUN") else 120
    d.find_element(By.ID, "prompt").send_keys(prompt)
    for field, value in (("length", length), ("seed", 3), ("temperature", 0.7)):
        box = d.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    d.find_element(By.ID, "generate").click()
    wait.until(lambda d: js("return document.getElementById('output').dataset.done") == "1")
    shown = js("return document.getElementById('output-text').textContent")
    messages = int(js("return document.getElementById('output').dataset.messages"))
    assert messages == length  # each character arrived as its own streamed message
    expected = post(page_server.url + "api/generate",
                    {"prompt": prompt, "length": length, "seed": 3, "temperature": 0.7, "stream": False})
    assert shown == expected["text"]
    assert "seed 3" in d.find_element(By.ID, "generate-status").text

    d.find_element(By.ID, "to-visualiser").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#vis-output .ch")) == len(prompt) + length)
    # pick the strongest unit of the first feature the text varies: the ranking's own suggestion
    d.find_element(By.CSS_SELECTOR, "#units .unit-link").click()
    unit = d.find_element(By.ID, "unit").get_attribute("value")
    wait.until(lambda d: f"[{unit}]" in d.find_element(By.ID, "vis-status").text)
    spans = d.find_elements(By.CSS_SELECTOR, "#vis-output .ch")
    colours = js("return Array.from(document.querySelectorAll('#vis-output .ch'), "
                 "s => getComputedStyle(s).backgroundColor)")
    assert len(colours) == len(spans) == len(prompt) + length
    reds = [c for c in colours if c.startswith("rgba(239, 83, 80") or c == "rgb(239, 83, 80)"]
    blues = [c for c in colours if c.startswith("rgba(66, 133, 244") or c == "rgb(66, 133, 244)"]
    assert len(reds) + len(blues) == len(colours) and len(set(colours)) > 10  # every character coloured, variously

    target = spans[len(prompt) + 20]
    ActionChains(d).move_to_element(target).perform()
    tooltip = d.find_element(By.ID, "tooltip")
    wait.until(lambda d: tooltip.is_displayed())
    rows = tooltip.find_elements(By.CSS_SELECTOR, "tr")
    assert len(rows) == 5 and all(len(r.find_elements(By.TAG_NAME, "td")) == 3 for r in rows)
    probs = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001

    out = Path(os.environ.get("RNNKIT_SCREENSHOT") or tmp_path / "web.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    assert d.save_screenshot(str(out)) and out.stat().st_size > 20_000
