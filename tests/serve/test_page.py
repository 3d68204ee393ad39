"""The page of `dfdc serve` in a real headless Chromium (Playwright, the OS package's browser)."""
from __future__ import annotations

import shutil

import pytest
from serve_helpers import bundle, server  # noqa: F401 - fixtures

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if exe is None:
        pytest.skip("no Chromium on this machine (Debian: apt install chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a skip, said why
            pytest.skip(f"Chromium at {exe} does not start: {str(e).splitlines()[0]}")
        yield b
        b.close()


def test_upload_the_ffpp_fake_and_see_verdict_plot_and_faces(browser, server, ffpp_root):
    fake = next((ffpp_root / "manipulated_sequences").glob("*/c23/videos/*.mp4"))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    page.wait_for_function("document.getElementById('about').textContent.includes('tiny')")
    page.evaluate("""() => {  // remember whether the progress bar showed, however fast the scoring is
        window.sawProgress = false;
        const bar = document.getElementById('progress');
        new MutationObserver(() => { if (!bar.classList.contains('hidden')) window.sawProgress = true; })
            .observe(bar, {attributes: true});
    }""")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#result:not(.hidden)", timeout=240_000)
    assert page.evaluate("window.sawProgress")
    verdict = page.inner_text("#verdict")
    assert verdict.startswith(("FAKE: P(fake) = ", "REAL: P(fake) = ")), verdict
    assert fake.name in page.inner_text("#detail")
    assert page.locator("#plot svg polyline").count() == 1 and page.locator("#plot svg circle").count() > 1
    thumbs = page.locator("#thumbs img")
    assert thumbs.count() > 0
    assert page.evaluate("[...document.querySelectorAll('#thumbs img, #cams img')].every(i => i.naturalWidth > 0)")
    assert page.locator("#cams img").count() > 0
    assert page.inner_text("#status") == "" and not errors
    page.close()


def test_a_text_file_shows_the_refusal(browser, server, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n")
    page = browser.new_page()
    page.goto(server.url)
    page.set_input_files("#file", str(notes))
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Not scored')")
    assert "415" in page.inner_text("#status") and "text" in page.inner_text("#status")
    assert page.locator("#result.hidden").count() == 1
    page.close()
