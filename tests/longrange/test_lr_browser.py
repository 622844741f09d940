"""The interactive HTML page in a real browser: Debian's chromium, headless, via selenium.

If chromium or chromedriver is missing these tests FAIL (install them: `apt-get install chromium
chromium-driver`, as .ci/run does), unless LSTMKIT_SKIP_BROWSER=1 is set, which skips them
with that reason shown.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import numpy as np
import pytest

from lstmkit.inspect import StateSet, collect_states, match_cells, select_cells
from lstmkit.inspect.html import write_page

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def require_browser(chromium: str, chromedriver: str) -> None:
    """Fail (never skip silently) when the browser is missing, unless skipping was asked for."""
    if os.environ.get("LSTMKIT_SKIP_BROWSER") == "1":
        pytest.skip("LSTMKIT_SKIP_BROWSER=1: browser tests skipped on request")
    missing = [p for p in (chromium, chromedriver) if not os.path.exists(p)]
    if missing:
        pytest.fail(
            f"browser test needs {missing}: install Debian's chromium and "
            f"chromium-driver (apt-get install chromium chromium-driver), or set "
            f"LSTMKIT_SKIP_BROWSER=1 to skip these tests",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def browser():
    require_browser(CHROMIUM, CHROMEDRIVER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lstmkit-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "1"
    )
    errors = (
        [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        if hasattr(driver, "get_log")
        else []
    )
    assert not errors, f"JavaScript errors: {errors}"


def _tok(driver, k, t):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"tok-{k}-{t}")


def _positions(sents):
    return [(k, t) for k, s in enumerate(sents) for t in range(len(s))]


SIGMOID_COLOUR = (0, 120, 60)  # gates in [0, 1]: green, opaque at 1
POSITIVE_COLOUR, NEGATIVE_COLOUR = (215, 48, 39), (49, 54, 149)  # signed states: red / blue


def _expected_colour(name: str, v: float) -> tuple[int, int, int, float]:
    """The page's colour scale (lstmkit/inspect/html.py): a sigmoid gate's value is the alpha of
    green; a signed state's |value| (at most 1) is the alpha of red (>= 0) or blue (< 0)."""
    if name in ("i", "f", "o", "r", "z"):
        return (*SIGMOID_COLOUR, min(1.0, max(0.0, v)))
    return (*(POSITIVE_COLOUR if v >= 0 else NEGATIVE_COLOUR), min(1.0, abs(v)))


def _css_rgba(text: str) -> tuple[int, int, int, float]:
    m = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", text)
    assert m, f"not a CSS colour: {text!r}"
    r, g, b, a = m.groups()
    return int(r), int(g), int(b), 1.0 if a is None else float(a)


def assert_colour(element, want: tuple[int, int, int, float]) -> None:
    got = _css_rgba(element.value_of_css_property("background-color"))
    assert got[:3] == want[:3], (got, want)
    # Chrome keeps alpha in 8 bits and prints the shortest decimal of that byte (0.018 -> 0.02)
    assert got[3] == pytest.approx(want[3], abs=1 / 255), (got, want)


def test_page_renders_and_hover_shows_gate_values(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from test_lr_inspect import SENTS, tiny_lm  # the same tiny model as the other tests

    model, vocab = tiny_lm("lstm")
    st = collect_states(model, vocab, SENTS)
    path = write_page(st, tmp_path / "page.html", default_cell=2)
    _open(browser, path)
    toks = browser.find_elements(By.CSS_SELECTOR, ".tok")
    assert [t.text for t in toks] == [w for s in SENTS for w in s]
    for t, k, pos in zip(toks, *zip(*_positions(SENTS))):  # cell 2 of c colours each token
        assert_colour(t, _expected_colour("c", round(float(st.values["c"][k][pos][2]), 3)))
    target = _tok(browser, 1, 4)  # "dog" in sentence 1
    ActionChains(browser).move_to_element(target).perform()
    details = browser.find_element(By.ID, "details")
    assert '"dog" sentence 1, position 4; cell 2' in details.text
    for name in st.names:
        row = details.find_element(By.CSS_SELECTOR, f'tr[data-gate="{name}"]')
        shown = float(row.find_element(By.CSS_SELECTOR, ".val").text)
        assert shown == pytest.approx(float(st.values[name][1][4][2]), abs=1e-3)
        squares = row.find_elements(By.CSS_SELECTOR, ".strip span")
        assert len(squares) == st.hidden_size
    # picking another cell recolours the tokens: the title shows the new cell's value
    cell = browser.find_element(By.ID, "cell")
    cell.clear()
    cell.send_keys("5")
    want = float(np.round(st.values["c"][1][4][5], 3))
    assert_colour(target, _expected_colour("c", want))
    assert target.get_attribute("title") == f"c[5] = {want:g}" or float(
        target.get_attribute("title").split("= ")[1]
    ) == pytest.approx(want, abs=1e-3)


def test_selecting_a_span_finds_the_cells_and_matches(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from test_lr_inspect import planted

    st: StateSet = planted()
    path = write_page(st, tmp_path / "planted.html", default_state="c", threshold=0.3)
    _open(browser, path)
    ActionChains(browser).click_and_hold(_tok(browser, 0, 2)).move_to_element(
        _tok(browser, 0, 4)
    ).release().perform()
    want = select_cells(st.values["c"][0], 2, 5, threshold=0.3)
    assert want == [0, 1, 3]
    found = browser.find_elements(By.CSS_SELECTOR, "#found .cellchip")
    assert [int(b.get_attribute("data-cell")) for b in found] == want
    assert browser.find_element(By.ID, "found-count").text == str(len(want))
    selected = browser.find_elements(By.CSS_SELECTOR, ".tok.sel")
    assert [t.text for t in selected] == ["near", "the", "dog"]
    matches = browser.find_elements(By.CSS_SELECTOR, "#matches .m")
    py = match_cells(st, "c", want, 0.3, length=3, exclude=(0, 2, 5))
    got = [
        (
            int(m.get_attribute("data-s")),
            int(m.get_attribute("data-a")),
            int(m.get_attribute("data-b")),
        )
        for m in matches
    ]
    assert got == [(m.sentence, m.start, m.end) for m in py] and got[0] == (1, 1, 4)
    # "off around" 1 drops cell 0, which is on everywhere
    off = browser.find_element(By.ID, "off")
    off.clear()
    off.send_keys("1")
    browser.find_element(By.ID, "title").click()  # blur: fires the change event
    found = browser.find_elements(By.CSS_SELECTOR, "#found .cellchip")
    assert [int(b.get_attribute("data-cell")) for b in found] == [1, 3]
    # clicking a found cell shows it
    found[1].click()
    assert browser.find_element(By.ID, "cell").get_attribute("value") == "3"


def test_token_colours_follow_the_gate_values(browser, tmp_path):
    """Known values, known colours: the signed cell state c in red / blue with alpha |c| (capped
    at 1), the forget gate f in green with alpha f; switching state or cell recolours."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    toks = [["a", "b", "c", "d", "e"]]
    c = np.array(
        [[0.5, -0.8], [-0.25, 0.1], [1.7, 0.0], [0.0, -2.0], [-1.0, 0.75]], dtype=np.float32
    )
    f = np.array([[0.75, 0.2], [0.2, 0.9], [1.0, 0.5], [0.0, 0.05], [0.4, 1.0]], dtype=np.float32)
    st = StateSet(tokens=toks, values={"f": [f], "c": [c]})
    path = write_page(st, tmp_path / "colours.html", default_state="c", default_cell=0)
    _open(browser, path)
    want_c0 = [
        (215, 48, 39, 0.5),
        (49, 54, 149, 0.25),
        (215, 48, 39, 1.0),  # 1.7: capped at opaque
        (215, 48, 39, 0.0),  # 0: transparent red
        (49, 54, 149, 1.0),
    ]
    for t, want in enumerate(want_c0):
        assert_colour(_tok(browser, 0, t), want)
        assert _expected_colour("c", float(c[t, 0])) == pytest.approx(want)
    picker = browser.find_element(By.ID, "state")
    picker.send_keys("f")  # the keyboard picks the option, as a user would
    assert Select(picker).first_selected_option.get_attribute("value") == "f"
    want_f0 = [(0, 120, 60, 0.75), (0, 120, 60, 0.2), (0, 120, 60, 1.0), (0, 120, 60, 0.0)]
    want_f0.append((0, 120, 60, 0.4))
    for t, want in enumerate(want_f0):
        assert_colour(_tok(browser, 0, t), want)
    cell = browser.find_element(By.ID, "cell")
    cell.clear()
    cell.send_keys("1")
    for t in range(len(toks[0])):
        assert_colour(_tok(browser, 0, t), (0, 120, 60, float(f[t, 1])))
    assert _tok(browser, 0, 3).get_attribute("title") == "f[1] = 0.05"


def test_a_missing_browser_fails_unless_skipping_is_asked_for(monkeypatch):
    monkeypatch.delenv("LSTMKIT_SKIP_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        require_browser("/nonexistent/chromium", CHROMEDRIVER)
    monkeypatch.setenv("LSTMKIT_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="skipped on request"):
        require_browser("/nonexistent/chromium", CHROMEDRIVER)
