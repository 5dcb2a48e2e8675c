"""`tinygpt serve`'s page in a real headless browser: Chromium from the OS packages (.ci/run
installs chromium and chromium-driver; no browser is ever downloaded) driven by Selenium. The page loads,
a prompt is sent, tokens arrive, a clicked token shows its probability table, a non-empty
attention heatmap and the logit lens; no JavaScript error reaches the console. A screenshot is
kept under the test's temporary folder."""
import shutil

import pytest

from test_serve_helpers import ServerProcess, make_checkpoint

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Chromium or its driver is missing (apt-get install chromium chromium-driver, as "
           ".ci/run does when it runs as root)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(make_checkpoint(tmp_path_factory.mktemp("serve_page") / "tiny"),
                           "--max-tokens", "40")
    yield server
    assert server.stop() == 0, server.stderr


@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [test] extra")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def by_css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def fill(driver, field, value):
    element = by_css(driver, "#" + field)[0]
    element.clear()
    element.send_keys(value)


def test_chat_click_a_token_and_see_inside(server, browser, tmp_path):
    from selenium.webdriver.support.ui import Select
    browser.get(server.url + "/")
    wait_for(browser, lambda d: by_css(d, "#model-name")[0].text == "tiny", "the model's name")
    assert len(by_css(browser, "#layer option")) == 2  # the tiny model's layers, from /api/info
    fill(browser, "prompt", "Tell me about cats.")
    fill(browser, "temperature", "0")  # greedy: the token that came next is the most probable
    fill(browser, "max_tokens", "12")
    by_css(browser, "#send")[0].click()
    wait_for(browser, lambda d: d.find_element("id", "status").text.startswith("done"),
             "the reply to finish")
    generated = by_css(browser, ".tok.gen")
    prompt = by_css(browser, ".tok.prompt")
    assert len(prompt) > 5 and 1 <= len(generated) <= 12  # tokens arrived (an end token may stop)
    # chapter 7's Alpaca prompt around the message, shown token by token
    assert "### Instruction" in "".join(t.text for t in prompt)

    prompt[-1].click()  # the prompt's last token: the first generated one came next
    wait_for(browser, lambda d: len(by_css(d, "#probs tr")) == 10, "the probability table")
    sampled = by_css(browser, "#probs tr.sampled")
    assert len(sampled) == 1 and "came next" in sampled[0].text
    assert sampled[0] == by_css(browser, "#probs tr")[0]  # greedy: rank 1
    assert "sums to 1.000000" in browser.find_element("id", "prob-note").text
    position = len(prompt) - 1
    cells = by_css(browser, "#heatmap tr")[0].find_elements("css selector", "td")
    assert len(cells) == position + 1  # one cell per context token, the heads' rows and average
    assert len(by_css(browser, "#heatmap tr")) == 2 + 1 + 1  # 2 heads, average, the key labels
    colours = {c.value_of_css_property("background-color") for c in by_css(browser, "#heatmap td")}
    assert len(colours) > 3  # a heatmap, not a blank grid
    assert len(by_css(browser, "#lens tr")) == 2
    assert len(by_css(browser, "#attn-text span")) == position + 1

    generated[min(3, len(generated) - 1)].click()  # a generated token, in layer 1, head 1
    Select(by_css(browser, "#layer")[0]).select_by_value("1")
    Select(by_css(browser, "#head")[0]).select_by_value("1")
    wait_for(browser, lambda d: "layer 1" in d.find_element("id", "picked").text, "layer 1")
    chosen = by_css(browser, "#heatmap tr.chosen th")
    assert [c.text for c in chosen] == ["head 1"]
    path = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    print(f"screenshot: {path}")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_stop_ends_a_reply_and_the_page_goes_on(server, browser):
    browser.get(server.url + "/")
    wait_for(browser, lambda d: by_css(d, "#model-name")[0].text == "tiny", "the page")
    fill(browser, "prompt", "Keep talking.")
    fill(browser, "max_tokens", "40")
    by_css(browser, "#send")[0].click()
    by_css(browser, "#stop")[0].click()
    wait_for(browser, lambda d: by_css(d, "#send")[0].is_enabled(), "the page to be ready")
    status = browser.find_element("id", "status").text
    assert status.startswith(("stopped", "done")), status
    fill(browser, "max_tokens", "1000")  # above the server's limit: its message is shown
    by_css(browser, "#send")[0].click()
    wait_for(browser, lambda d: "limit" in d.find_element("id", "status").text, "the error")
    assert by_css(browser, "#status.error")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
            and "400" not in e["message"]] == []
