"""The spectrum viewer (static/js/viewer/spectrum.js) in headless Chromium, fed a simulated quasar with a known DLA.

There is no production page for the viewer alone: Playwright serves a bare host page and the subject's
data_url/preview_url from the live server's origin (the JSON exactly per the data contract); the viewer's
modules and CSS come from the real static files.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image, ImageDraw
from scipy.special import wofz

from mlcore.simulate.spectra import SpectrumConfig, simulate_quasar, voigt_optical_depth

pytestmark = pytest.mark.browser
LYA = 1215.67
TOOLS = [{"index": 1, "type": "absorber", "label": "Damped Lyman-alpha absorber", "help": "Click the trough centre."},
         {"index": 3, "type": "redshift", "label": "Quasar redshift"}]  # fmt: skip
LOG_NHI_LABEL = "log N(HI) / cm⁻²"


@pytest.fixture(scope="module")
def quasar():
    """A BOSS-like sightline with one DLA, bright enough that its trough is plain (seeded, so fixed)."""
    config = SpectrumConfig(snr_range=(8.0, 12.0), log_nhi_range=(20.8, 21.2), z_qso_range=(2.8, 3.0))
    wave, flux, ivar, truth = simulate_quasar(np.random.default_rng(7), config, has_dla=True)
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.maximum(ivar, 1e-30)), np.nan)
    sigma[::97] = np.nan  # some pixels with unknown error, as the contract allows (null)
    rounded = lambda values: [float(f"{v:.4g}") if math.isfinite(v) else None for v in values]  # noqa: E731
    body = {"wavelength": [round(float(w), 3) for w in wave], "flux": rounded(flux), "error": rounded(sigma),
            "z_qso": truth["z_qso"], "units": {"wavelength": "Angstrom (observed frame)",
                                              "flux": "1e-17 erg / (Angstrom s cm2)"}}  # fmt: skip
    return {"json": json.dumps(body), "truth": truth, "wave": wave, "flux": flux}


def preview_png(wave: np.ndarray, flux: np.ndarray) -> bytes:
    image = Image.new("RGB", (900, 320), "white")
    top = np.nanpercentile(flux, 99.5)
    x = 900 * (wave - wave[0]) / (wave[-1] - wave[0])
    points = list(zip(x.tolist(), (300 - 280 * flux / top).tolist(), strict=True))
    ImageDraw.Draw(image).line(points, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def screenshot(page, name: str) -> None:
    folder = Path(os.environ.get("SKYLOOP_SCREENSHOT_DIR") or Path(settings.BASE_DIR) / "var" / "test" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"spectrum-viewer-{name}.png"), full_page=True)


class ViewerPage:
    """A bare page holding one SpectrumViewer; Playwright serves the subject's data from the live server origin."""

    def __init__(self, context, base_url: str, quasar: dict, *, data_status: int = 200, tools=TOOLS):
        self.base = f"{base_url}/viewer-test"
        self.quasar = quasar
        self.data_status = data_status
        self.tools = tools
        self.errors: list[str] = []
        context.route(f"{self.base}/**", self.serve)
        self.page = context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{self.base}/")
        self.page.wait_for_function("window.loading !== undefined")
        self.page.evaluate("window.loading")

    def serve(self, route):
        path = route.request.url[len(self.base) :]
        if path == "/":
            route.fulfill(status=200, content_type="text/html", body=self.host_html())
        elif path == "/preview.png":
            png = preview_png(self.quasar["wave"], self.quasar["flux"])
            route.fulfill(status=200, content_type="image/png", body=png)
        elif path == "/data.json" and self.data_status == 200:
            route.fulfill(status=200, content_type="application/json", body=self.quasar["json"])
        else:
            route.fulfill(status=self.data_status if path == "/data.json" else 404, body="{}")

    def host_html(self) -> str:
        subject = {"id": 1, "external_id": "sim-qso-7", "preview_url": f"{self.base}/preview.png",
                   "data_url": f"{self.base}/data.json", "metadata": {}}  # fmt: skip
        return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Spectrum viewer</title>
<link rel="stylesheet" href="/static/css/skyloop.css"><link rel="stylesheet" href="/static/css/viewer.css">
</head><body><main><div id="host"></div></main>
<script type="module">
import {{ SpectrumViewer }} from "/static/js/viewer/spectrum.js";
window.changes = [];
window.pageKeys = [];
document.addEventListener("keydown", (e) => window.pageKeys.push(e.key));
window.viewer = new SpectrumViewer(document.getElementById("host"),
  {{ tools: {json.dumps(self.tools)}, onChange: (marks) => window.changes.push(marks) }});
window.loading = window.viewer.load({json.dumps(subject)});
</script></body></html>"""

    def marks(self) -> list[dict]:
        return self.page.evaluate("window.viewer.getMarks()")

    def view(self) -> tuple[float, float]:
        lo, hi = self.page.get_attribute("canvas.sv-canvas", "data-view").split(",")
        return float(lo), float(hi)

    def point(self, wavelength: float, where: str = "plot") -> tuple[float, float]:
        """Page coordinates of a wavelength: in the plot, on the x axis, or in the line-name strip above it."""
        left, top, width, height = map(float, self.page.get_attribute("canvas.sv-canvas", "data-box").split(","))
        lo, hi = self.view()
        rect = self.page.locator("canvas.sv-canvas").bounding_box()
        x = rect["x"] + left + (wavelength - lo) / (hi - lo) * width
        y = {"plot": top + 0.6 * height, "axis": top + height + 12, "lines": top / 2}[where]
        return x, rect["y"] + y

    def zoom_to(self, lo: float, hi: float) -> None:
        """Drag a range along the wavelength axis, as a volunteer zooms to a region."""
        self.page.mouse.move(*self.point(lo, "axis"))
        self.page.mouse.down()
        self.page.mouse.move(*self.point(hi, "axis"), steps=5)
        self.page.mouse.up()


@pytest.fixture
def desktop(browser, live_server, quasar):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    viewer = ViewerPage(context, live_server.url, quasar)
    yield viewer
    assert viewer.errors == []
    context.close()


def test_it_replaces_the_preview_with_the_interactive_plot(desktop):
    page = desktop.page
    assert page.locator("img.sv-preview").is_hidden() and page.locator("canvas.sv-canvas").is_visible()
    lo, hi = desktop.view()
    assert lo == pytest.approx(desktop.quasar["wave"][0], abs=0.01)
    assert hi == pytest.approx(desktop.quasar["wave"][-1], abs=0.01)
    z_qso = desktop.quasar["truth"]["z_qso"]
    assert float(page.get_attribute("canvas.sv-canvas", "data-z")) == pytest.approx(z_qso)  # line list starts there
    assert page.input_value(".sv-redshift input[type=number]") == f"{z_qso:.4f}"
    assert desktop.marks() == []  # the redshift is only a mark once the volunteer chooses it


def test_a_failed_data_fetch_keeps_the_preview_and_says_so(browser, live_server, quasar):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    viewer = ViewerPage(context, live_server.url, quasar, data_status=503)
    page = viewer.page
    assert page.locator("img.sv-preview").is_visible()
    page.wait_for_function("document.querySelector('img.sv-preview').naturalWidth > 0")
    assert "503" in page.text_content(".sv-notice") and "preview" in page.text_content(".sv-notice")
    assert page.locator("canvas.sv-canvas").is_hidden()
    assert viewer.errors == []
    context.close()


def test_clicking_the_dla_centre_marks_its_redshift_and_the_slider_sets_its_column_density(desktop):
    truth = desktop.quasar["truth"]
    centre = LYA * (1 + truth["z_abs"])
    desktop.zoom_to(centre - 90, centre + 90)
    lo, hi = desktop.view()
    assert lo == pytest.approx(centre - 90, abs=3) and hi == pytest.approx(centre + 90, abs=3)

    desktop.page.mouse.click(*desktop.point(centre))
    [mark] = desktop.marks()
    assert mark["tool"] == 1 and abs(mark["z"] - truth["z_abs"]) < 0.003
    assert mark["log_nhi"] == 20.3  # the DLA threshold until the volunteer matches the wings
    desktop.page.keyboard.press("Enter")  # after a click, Enter is the page's ("Done"), not a second mark
    assert len(desktop.marks()) == 1 and desktop.page.evaluate("window.pageKeys") == ["Enter"]

    desktop.page.get_by_label(LOG_NHI_LABEL, exact=True).fill("21")  # the slider
    assert desktop.marks()[0]["log_nhi"] == 21.0
    desktop.page.get_by_label(f"{LOG_NHI_LABEL} (number)").fill("20.85")
    assert desktop.marks()[0]["log_nhi"] == 20.85
    assert desktop.page.evaluate("window.changes.at(-1)") == desktop.marks()
    screenshot(desktop.page, "dla")


def test_a_dla_mark_can_be_dragged_to_a_new_centre(desktop):
    centre = LYA * (1 + desktop.quasar["truth"]["z_abs"])
    desktop.zoom_to(centre - 90, centre + 90)
    desktop.page.mouse.click(*desktop.point(centre - 30))
    desktop.page.mouse.move(*desktop.point(centre - 30))
    desktop.page.mouse.down()
    desktop.page.mouse.move(*desktop.point(centre), steps=6)
    desktop.page.mouse.up()
    [mark] = desktop.marks()
    assert abs(mark["z"] - desktop.quasar["truth"]["z_abs"]) < 0.003


def test_the_js_voigt_optical_depth_matches_the_faddeeva_function(desktop):
    z_abs = 2.5
    cases = [(20.3, 30.0), (21.5, 30.0), (20.0, 12.0)]
    offsets = np.array([0.05, 1.5, 3.0, 6.0, 12.0, 25.0, 50.0])  # rest-frame Å from the line centre
    wave = LYA * (1 + z_abs) + np.concatenate([-offsets, offsets]) * (1 + z_abs)
    for log_n, b in cases:
        js = desktop.page.evaluate(
            """async ([wave, z, logN, b]) => {
                 const { lineTau } = await import('/static/js/viewer/voigt.js');
                 return Array.from(lineTau(Float64Array.from(wave), z, logN, b));
               }""",
            [wave.tolist(), z_abs, log_n, b],
        )
        # Reference: tau = N f (pi e^2 / m_e c) H(a, x) / (sqrt(pi) dnu_D), H = Re w(x + ia) (Faddeeva).
        c_kms, nu0 = 299792.458, 2.99792458e18 / LYA
        dnu = nu0 * b / c_kms
        x = (2.99792458e18 * (1 + z_abs) / wave - nu0) / dnu
        a = 6.265e8 / (4 * np.pi * dnu)
        reference = 10**log_n * 0.4164 * 0.026540 * wofz(x + 1j * a).real / (np.sqrt(np.pi) * dnu)
        np.testing.assert_allclose(js, reference, rtol=0.01)
        # ... and the simulation that makes the DLAs uses the same physics.
        np.testing.assert_allclose(voigt_optical_depth(wave, z_abs, log_n, b), reference, rtol=1e-3)


def test_the_smoothing_is_an_inverse_variance_weighted_kernel_mean(desktop):
    flux = [1.0, 2.0, 10.0, 3.0, 4.0, float("nan"), 5.0]
    error = [1.0, 0.5, 5.0, 1.0, None, 1.0, 2.0]
    js = desktop.page.evaluate(
        """async ([flux, error]) => {
             const { smoothSpectrum } = await import('/static/js/viewer/smooth.js');
             const out = smoothSpectrum(Float64Array.from(flux), Float64Array.from(error, (e) => e ?? NaN), 'boxcar-3');
             return [Array.from(out.flux), Array.from(out.error, (e) => (Number.isNaN(e) ? null : e))];
           }""",
        [flux, error],
    )
    known = [e for e in error if e is not None]
    weights = np.array([1 / e**2 if e is not None else np.median([1 / k**2 for k in known]) for e in error])
    weights[np.isnan(flux)] = 0
    values = np.nan_to_num(flux)
    expected = [
        np.sum((weights * values)[max(i - 1, 0) : i + 2]) / np.sum(weights[max(i - 1, 0) : i + 2]) for i in range(7)
    ]
    np.testing.assert_allclose(js[0], expected, rtol=1e-12)
    assert js[1][4] is None and js[1][2] < 5.0  # unknown stays unknown; weighting shrinks the noisy pixel's error


def test_dragging_the_line_list_sets_the_redshift_mark(desktop):
    page = desktop.page
    z_qso = desktop.quasar["truth"]["z_qso"]
    lya = LYA * (1 + z_qso)
    desktop.zoom_to(lya - 300, lya + 300)
    page.mouse.move(*desktop.point(lya, "lines"))
    page.mouse.down()
    page.mouse.move(*desktop.point(lya + 60, "lines"), steps=8)
    page.mouse.up()
    [mark] = desktop.marks()
    assert mark["tool"] == 3
    assert mark["z"] == pytest.approx((lya + 60) / LYA - 1, abs=0.002)  # Lyα followed the pointer
    assert mark["z"] == pytest.approx(float(page.get_attribute("canvas.sv-canvas", "data-z")), abs=1e-5)
    assert page.is_checked(".sv-z-mark")

    screenshot(page, "redshift")
    page.get_by_label("Redshift z (number)").fill("2.5")  # typing a redshift moves the mark too
    assert desktop.marks() == [{"tool": 3, "z": 2.5}]
    page.uncheck(".sv-z-mark")  # and the volunteer can withdraw it
    assert desktop.marks() == []


def test_the_wheel_zooms_around_the_pointer_and_a_drag_pans(desktop):
    page = desktop.page
    anchor = 5000.0
    page.mouse.move(*desktop.point(anchor))
    page.mouse.wheel(0, -400)
    page.wait_for_function("Number(document.querySelector('canvas.sv-canvas').dataset.view.split(',')[1]) < 9000")
    lo, hi = desktop.view()
    full = desktop.quasar["wave"][-1] - desktop.quasar["wave"][0]
    assert hi - lo < 0.6 * full
    assert (anchor - lo) / (hi - lo) == pytest.approx((anchor - desktop.quasar["wave"][0]) / full, abs=0.01)
    x, y = desktop.point(anchor)
    page.get_by_role("button", name="Pan / zoom").click()  # in pan mode a click marks nothing
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 200, y, steps=5)
    page.mouse.up()
    lo2, hi2 = desktop.view()
    assert lo2 > lo and hi2 - lo2 == pytest.approx(hi - lo)
    page.mouse.click(x, y)
    assert desktop.marks() == []
    page.click("button.sv-reset")
    assert desktop.view() == pytest.approx((desktop.quasar["wave"][0], desktop.quasar["wave"][-1]), abs=0.01)


def test_set_marks_restores_a_classification_for_editing(desktop):
    page = desktop.page
    page.evaluate("""window.viewer.setMarks([{tool: 1, z: 2.4, log_nhi: 21.0}, {tool: 3, z: 2.9},
                                             {tool: 9, z: 1.0}])""")
    assert desktop.marks() == [{"tool": 1, "z": 2.4, "log_nhi": 21.0}, {"tool": 3, "z": 2.9}]  # unknown tool dropped
    assert page.input_value(".sv-redshift input[type=number]") == "2.9000" and page.is_checked(".sv-z-mark")
    assert page.locator(".sv-mark").all_text_contents() == ["1. Damped Lyman-alpha absorber: z = 2.4000, log N = 21.00"]
    page.evaluate("window.viewer.clearMarks()")
    assert desktop.marks() == [] and not page.is_checked(".sv-z-mark")
    assert page.evaluate("window.changes") == []  # only the volunteer's own changes are reported


def test_marks_can_be_selected_and_deleted(desktop):
    page = desktop.page
    centre = LYA * (1 + desktop.quasar["truth"]["z_abs"])
    desktop.zoom_to(centre - 90, centre + 90)
    for offset in (-40, 0, 40):
        page.mouse.click(*desktop.point(centre + offset))
    assert len(desktop.marks()) == 3
    page.get_by_role("button", name="Delete absorber 1").click()
    expected = [(centre + offset) / LYA - 1 for offset in (0, 40)]
    assert [m["z"] for m in desktop.marks()] == pytest.approx(expected, abs=0.002)
    page.click(".sv-mark[data-index='1']")  # select the last one in the list
    page.click("button.sv-delete")
    assert len(desktop.marks()) == 1
    page.mouse.click(*desktop.point(centre))  # clicking on a mark selects it (no new mark) ...
    assert len(desktop.marks()) == 1
    page.keyboard.press("Delete")  # ... and Delete removes it
    assert desktop.marks() == []
    assert page.evaluate("window.changes.at(-1)") == []


def test_a_volunteer_marks_a_dla_with_the_keyboard_alone(desktop):
    page = desktop.page
    truth = desktop.quasar["truth"]
    centre = LYA * (1 + truth["z_abs"])
    for _ in range(20):
        if page.evaluate("document.activeElement.classList.contains('sv-canvas')"):
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.classList.contains('sv-canvas')")
    for _ in range(6):
        page.keyboard.press("+")
    for _ in range(400):  # pan until the cursor (the view's centre) is on the trough's centre
        lo, hi = desktop.view()
        offset = centre - (lo + hi) / 2
        if abs(offset) < 1.5:
            break
        fine = abs(offset) < 0.1 * (hi - lo)
        page.keyboard.press(("Shift+" if fine else "") + ("ArrowRight" if offset > 0 else "ArrowLeft"))
    page.keyboard.press("Enter")
    [mark] = desktop.marks()
    assert abs(mark["z"] - truth["z_abs"]) < 0.003
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    assert desktop.marks()[0]["log_nhi"] == 20.5
    page.keyboard.press("2")  # the page's hotkeys are not the viewer's: they reach the page, the viewer's keys do not
    keys = page.evaluate("window.pageKeys")
    assert keys[-1] == "2" and set(keys) <= {"Tab", "Shift", "2"}
    screenshot(page, "keyboard")


def test_it_works_by_touch_at_phone_width(browser, live_server, quasar):
    context = browser.new_context(viewport={"width": 360, "height": 740}, has_touch=True, is_mobile=True)
    viewer = ViewerPage(context, live_server.url, quasar)
    page = viewer.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for selector in ("canvas.sv-canvas", ".sv-bar", ".sv-absorbers", ".sv-redshift"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
    centre = LYA * (1 + quasar["truth"]["z_abs"])
    viewer.zoom_to(centre - 60, centre + 60)
    page.touchscreen.tap(*viewer.point(centre))
    [mark] = viewer.marks()
    assert abs(mark["z"] - quasar["truth"]["z_abs"]) < 0.003
    page.get_by_label(LOG_NHI_LABEL, exact=True).fill(str(round(quasar["truth"]["log_nhi"] * 20) / 20))
    screenshot(page, "phone")

    lo, hi = viewer.view()  # two fingers spread apart zoom in around the point between them
    x, y = viewer.point(centre)
    cdp = context.new_cdp_session(page)
    fingers = lambda spread: [{"x": x - spread, "y": y, "id": 0}, {"x": x + spread, "y": y, "id": 1}]  # noqa: E731
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": fingers(20)})
    for spread in (30, 40, 60):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": fingers(spread)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    lo2, hi2 = viewer.view()
    assert (hi2 - lo2) == pytest.approx((hi - lo) / 3, rel=0.05)
    assert (lo2 + hi2) / 2 == pytest.approx(centre, abs=0.02 * (hi - lo))
    assert len(viewer.marks()) == 1  # a pinch is not a tap
    assert viewer.errors == []
    context.close()


def test_it_keeps_to_the_workflows_maximum_number_of_marks(desktop):
    marks = desktop.page.evaluate(
        """async () => {
             const { SpectrumViewer } = await import('/static/js/viewer/spectrum.js');
             const host = document.body.appendChild(document.createElement('div'));
             const tools = [{ index: 1, type: 'absorber', label: 'DLA' }];
             const viewer = new SpectrumViewer(host, { tools, maxMarks: 2 });
             await viewer.load({ id: 1, external_id: 'x', preview_url: '', data_url: location.href + 'data.json' });
             for (const lambda of [4000, 4100, 4200]) viewer.addAbsorber(lambda);
             return [viewer.getMarks(), host.querySelector('.sv-notice').textContent];
           }"""
    )
    assert len(marks[0]) == 2 and "At most 2 marks" in marks[1]
