"""`hf-cir app` in a real headless Chromium: load the page, search, refine from a result, take a screenshot.

Uses Debian's `chromium` (`make browser` installs it) through Playwright's `executable_path`. Set
`HF_CIR_APP_SCREENSHOT=docs/app.png` (`make app-screenshot`) to keep the screenshot.
"""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "no Chromium on PATH (install Debian's chromium: `make browser` as root)"
        print(f"SKIPPED browser test: {message}")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


LOADED = "(selector) => [...document.querySelectorAll(selector)].filter(i => i.complete && i.naturalWidth > 0).length"


@pytest.fixture(scope="module")
def plain_app(app_server, app_work, start_app):
    """`hf-cir app` exactly as the README gives it (no decoder), on the gallery the first server wrote."""
    with start_app(app_work) as server:
        yield server


def _loaded_images(page, selector: str, at_least: int) -> int:
    """How many images under `selector` finished loading with real pixels (waiting up to a minute for `at_least`)."""
    page.wait_for_function(f"(selector) => ({LOADED})(selector) >= {at_least}", arg=selector, timeout=60_000)
    return page.evaluate(LOADED, selector)


def test_a_query_in_the_browser_shows_ranked_pictures(plain_app, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(plain_app.url, timeout=120_000)
    search = page.get_by_role("button", name="Search", exact=True)
    search.wait_for(timeout=120_000)
    reference_id = page.get_by_label("Picked from the gallery (its stored embedding is reused)")
    text = page.get_by_label("What should change?")
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.endsWith('.png'))", timeout=60_000
    )
    example_text = text.input_value()
    assert example_text  # the page opens on an example query

    search.click()
    page.wait_for_selector(".hf-cir-results img", timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('.hf-cir-results img').length >= 50", timeout=60_000)
    assert _loaded_images(page, ".hf-cir-results img", 50) == 50  # five methods side by side, ten results each
    for label in ("LinCIR", "CompoDiff", "Image only (baseline)", "Text only (baseline)", "Image + text (baseline)"):
        assert page.get_by_text(label, exact=False).first.is_visible()
    timings = page.locator(".hf-cir-timings").first.inner_text()
    assert "Compose (ms)" in timings and "stored: no image-encoder pass" in timings
    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("HF_CIR_APP_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["HF_CIR_APP_SCREENSHOT"])

    # Refine: the second CompoDiff result becomes the reference, and the next search starts from it.
    first_reference = reference_id.input_value()
    page.locator("#hf-cir-results-1 img").nth(1).click()
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('textarea')].some(t => t.value.endsWith('.png') && t.value !== old)",
        arg=first_reference,
        timeout=60_000,
    )
    picked = reference_id.input_value()
    assert picked != first_reference and picked.endswith(".png")
    search.click()
    page.wait_for_function(
        "(picked) => document.querySelector('.hf-cir-timings').innerText.includes(picked)", arg=picked, timeout=60_000
    )
    assert _loaded_images(page, ".hf-cir-results img", 50) == 50
    page.close()
