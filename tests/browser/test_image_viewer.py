"""The image viewer (static/js/viewer/image.js) in headless Chromium, fed float16 pixels exactly per the data contract.

There is no production page for the viewer alone: Playwright serves a bare host page and the subject's
data_url/preview_url from the live server's origin, and the viewer module comes from the real static files.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.visualization import PercentileInterval, ZScaleInterval
from django.conf import settings
from PIL import Image

from labeler.subjects.rendering import lupton_rgb

pytestmark = pytest.mark.browser
BANDS = ("g", "r", "i")
TOOLS = [
    {"index": 0, "type": "box", "label": "Galaxy", "help": "Drag a box round the galaxy."},
    {"index": 2, "type": "line", "label": "Trail"},
]
MASKED = (90, 42, 90)  # the viewer's colour for pixels without data (#5a2a5a)


def encode(cube: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(B, H, W) fluxes -> float16 body, per-band scales (powers of two), and the fluxes the browser can recover."""
    peaks = np.nanmax(np.where(np.isfinite(cube), np.abs(cube), 0), axis=(1, 2))
    scales = 2.0 ** np.ceil(np.log2(np.where(peaks > 0, peaks, 1) / 2**14))
    halves = (cube / scales[:, None, None]).astype("<f2")
    return halves.tobytes(), scales, halves.astype(np.float32) * scales[:, None, None].astype(np.float32)


def sky(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A small (3, H, W) sky: noise, a few Gaussian sources brighter in the red, a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cube = rng.normal(0, 0.02, (3, height, width)) + 0.001 * xx[None]
    for _ in range(5):
        y0, x0, flux = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.5, 5)
        blob = flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 8)
        cube += blob[None] * np.array([0.5, 0.8, 1.0])[:, None, None]
    return cube.astype(np.float32)


def preview_png(cube: np.ndarray) -> bytes:
    image = Image.fromarray(np.flipud(lupton_rgb(np.nan_to_num(cube)))).resize((256, 256), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def approx_mark(*, tool: int, tolerance: float, **coordinates: float) -> dict:
    return {"tool": tool, **{k: pytest.approx(v, abs=tolerance) for k, v in coordinates.items()}}


def screenshot(page, name: str) -> None:
    folder = Path(os.environ.get("SKYLOOP_SCREENSHOT_DIR") or Path(settings.BASE_DIR) / "var" / "test" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"image-viewer-{name}.png"), full_page=True)


class ViewerPage:
    """A bare page holding one ImageViewer; subjects' bytes are served by Playwright from the live server origin."""

    def __init__(self, context, base_url: str):
        self.base = f"{base_url}/viewer-test"
        self.bodies: dict[str, tuple[int, bytes, dict]] = {}
        context.route(f"{self.base}/**", self.serve)
        self.page = context.new_page()
        self.page.goto(f"{self.base}/")
        self.height = self.width = 0

    def serve(self, route):
        path = route.request.url[len(self.base) :]
        if path == "/":
            html = (
                '<!doctype html><html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                '<link rel="stylesheet" href="/static/css/viewer.css"></head>'
                '<body style="margin:0;padding:8px;background:#0d1321;color:#f0ebd8;font-family:sans-serif">'
                '<div id="host" style="max-width:600px"></div></body></html>'
            )
            return route.fulfill(status=200, body=html, content_type="text/html")
        status, body, headers = self.bodies.get(path, (404, b"", {}))
        route.fulfill(status=status, body=body, headers=headers)

    def show(self, cube: np.ndarray, *, tools=(), name="s1", data_status=200, with_shape=True, same_viewer=False):
        """Load a subject made from `cube` (B, H, W) into a new viewer (or the same one, as the classify page
        does); return the fluxes the browser should recover."""
        body, scales, fluxes = encode(cube)
        self.height, self.width = cube.shape[1:]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Skyloop-Shape": ",".join(map(str, cube.shape)),
            "X-Skyloop-Bands": ",".join(BANDS[: cube.shape[0]]),
            "X-Skyloop-Scale": ",".join(repr(float(s)) for s in scales),
        }
        self.bodies[f"/data/{name}"] = (data_status, body, headers)
        self.bodies[f"/preview/{name}.png"] = (200, preview_png(cube), {"Content-Type": "image/png"})
        metadata = {"bands": list(BANDS[: cube.shape[0]]), "shape": list(cube.shape)} if with_shape else {}
        subject = {
            "id": 1,
            "external_id": name,
            "metadata": metadata,
            "preview_url": f"{self.base}/preview/{name}.png",
            "data_url": f"{self.base}/data/{name}",
        }
        self.page.evaluate(
            """async ({tools, subject, sameViewer}) => {
                 const { ImageViewer } = await import('/static/js/viewer/image.js');
                 if (sameViewer) return window.viewer.load(subject);
                 window.viewer?.destroy();
                 window.changes = [];
                 window.viewer = new ImageViewer(document.getElementById('host'),
                                                 {tools, onChange: (m) => window.changes.push(m)});
                 await window.viewer.load(subject);
               }""",
            {"tools": list(tools), "subject": subject, "sameViewer": same_viewer},
        )
        return fluxes

    def attr(self, name: str) -> str | None:
        return self.page.get_attribute(".iv", f"data-{name}")

    def limits(self) -> tuple[float, float]:
        lo, hi = self.attr("limits").split(",")
        return float(lo), float(hi)

    def view(self) -> tuple[float, float, float]:
        """(screen px per data pixel, left, top) as drawn in the next frame."""
        view = self.page.evaluate(
            """() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(
                 () => done(document.querySelector('.iv-stage').dataset.view))))"""
        )
        scale, left, top = map(float, view.split(","))
        return scale, left, top

    def screen(self, x: float, y: float) -> tuple[float, float]:
        """Page coordinates of data point (x, y); y is the row, counted from the BOTTOM."""
        box = self.page.locator(".iv-stage").bounding_box()
        scale, left, top = self.view()
        return box["x"] + left + x * scale, box["y"] + top + (self.height - y) * scale

    def pixel(self, col: int, row: int) -> tuple[int, int, int, int]:
        """RGBA shown at the centre of data pixel (row, col), read back from the canvas after the next frame."""
        return tuple(
            self.page.evaluate(
                """([x, y, height]) => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => {
                     const stage = document.querySelector('.iv-stage');
                     const canvas = stage.querySelector('canvas');
                     const [scale, left, top] = stage.dataset.view.split(',').map(Number);
                     const ratio = canvas.width / stage.getBoundingClientRect().width;
                     const sx = (left + x * scale) * ratio, sy = (top + (height - y) * scale) * ratio;
                     done([...canvas.getContext('2d').getImageData(Math.floor(sx), Math.floor(sy), 1, 1).data]);
                   })))""",
                [col + 0.5, row + 0.5, self.height],
            )
        )

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*self.screen(*start))
        mouse.down()
        mouse.move(*self.screen(*end), steps=6)
        mouse.up()

    def marks(self) -> list[dict]:
        return self.page.evaluate("window.viewer.getMarks()")

    def display(self, band: str, stretch: str = "linear", limits: str = "minmax") -> None:
        self.page.select_option(".iv-band", band)
        self.page.select_option(".iv-stretch", stretch)
        self.page.select_option(".iv-limits", limits)


@pytest.fixture
def viewer(browser, live_server):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    yield ViewerPage(context, live_server.url)
    context.close()


@pytest.fixture
def phone(browser, live_server):
    context = browser.new_context(
        viewport={"width": 360, "height": 740}, device_scale_factor=2, has_touch=True, is_mobile=True
    )
    yield ViewerPage(context, live_server.url)
    context.close()


def test_it_shows_the_decoded_float16_pixels_with_row_zero_at_the_bottom(viewer):
    fluxes = viewer.show(sky(64, 64, seed=1))
    assert viewer.attr("state") == "pixels"
    viewer.display("1")  # the r band, linear between its min and max
    r = fluxes[1]
    lo, hi = viewer.limits()
    assert lo == pytest.approx(r.min(), rel=1e-6) and hi == pytest.approx(r.max(), rel=1e-6)
    for row, col in [(0, 0), (0, 63), (63, 0), (10, 50), *np.argwhere(r == r.max()).tolist()]:
        expected = round(255 * (r[row, col] - lo) / (hi - lo))
        assert viewer.pixel(col, row)[:3] == pytest.approx((expected,) * 3, abs=1), (row, col)
    # Row 0 really is drawn at the bottom: its screen y is below row 63's.
    assert viewer.screen(0.5, 0.5)[1] > viewer.screen(0.5, 63.5)[1]
    # The readout gives the flux (value x scale) under the pointer.
    viewer.page.mouse.move(*viewer.screen(50.5, 10.5))
    readout = viewer.page.text_content(".iv-readout")
    assert re.search(r"x 50\.5\s+y 10\.5", readout)
    shown = float(re.search(r"r (\S+)", readout).group(1))
    assert shown == pytest.approx(r[10, 50], rel=1e-3)


def test_zscale_and_percentile_limits_agree_with_astropy(viewer):
    for size in (64, 256):
        cube = sky(size, size, seed=size)
        cube[0, :3, :] = np.nan
        fluxes = viewer.show(cube, name=f"z{size}")
        for band in (0, 2):
            viewer.display(str(band), "asinh", "zscale")
            expected = ZScaleInterval().get_limits(fluxes[band])
            assert viewer.limits() == pytest.approx(expected, rel=1e-4, abs=1e-6), (size, band)
        viewer.display("2", "sqrt", "99")
        assert viewer.limits() == pytest.approx(PercentileInterval(99).get_limits(fluxes[2]), rel=1e-4)


def test_invert_flips_the_colours(viewer):
    viewer.show(sky(64, 64, seed=2))
    viewer.display("0", "sqrt", "zscale")
    before = [viewer.pixel(c, r) for r, c in [(5, 5), (30, 31), (60, 2)]]
    viewer.page.locator(".iv-stage").focus()
    viewer.page.keyboard.press("i")
    assert viewer.attr("invert") == "true"
    after = [viewer.pixel(c, r) for r, c in [(5, 5), (30, 31), (60, 2)]]
    for b, a in zip(before, after, strict=True):
        assert a[:3] == pytest.approx(tuple(255 - v for v in b[:3]), abs=1)
    viewer.page.click(".iv-invert")
    assert viewer.pixel(5, 5) == before[0]


def test_the_colour_composite_matches_the_server_lupton_preview(viewer):
    fluxes = viewer.show(sky(64, 64, seed=3))
    assert viewer.attr("band") == "colour"
    expected = lupton_rgb(fluxes)  # (H, W, 3), row 0 = data row 0
    for row, col in [(0, 0), (20, 20), (40, 10), (63, 63), *np.argwhere(fluxes[2] == fluxes[2].max()).tolist()]:
        assert viewer.pixel(col, row)[:3] == pytest.approx(tuple(expected[row, col]), abs=2), (row, col)
    screenshot(viewer.page, "colour")


def test_nan_and_inf_pixels_are_masked_and_the_stretch_still_works(viewer):
    cube = sky(64, 64, seed=4)
    cube[:, 30:40, 30:40] = np.nan
    cube[1, 5, 5] = np.inf
    fluxes = viewer.show(cube)
    assert viewer.pixel(35, 35)[:3] == MASKED
    viewer.display("1", "log", "zscale")
    lo, hi = viewer.limits()
    assert np.isfinite([lo, hi]).all() and lo < hi
    assert viewer.pixel(35, 35)[:3] == MASKED and viewer.pixel(5, 5)[:3] == MASKED
    assert viewer.pixel(10, 50)[3] == 255
    viewer.page.mouse.move(*viewer.screen(35.5, 35.5))
    assert "no data" in viewer.page.text_content(".iv-readout")
    assert np.isfinite(fluxes[1, 10, 50])


def test_a_volunteer_draws_two_boxes_with_the_mouse_in_array_coordinates(viewer):
    viewer.show(sky(64, 64, seed=5), tools=TOOLS)
    scale = viewer.view()[0]
    viewer.drag((10, 20), (30, 35))
    viewer.drag((50, 60), (40, 45))  # drawn from top-right to bottom-left
    marks = viewer.marks()
    assert len(marks) == 2 and [m["tool"] for m in marks] == [0, 0]
    one_screen_pixel = 1 / scale
    assert marks[0] == approx_mark(tool=0, x=10, y=20, width=20, height=15, tolerance=one_screen_pixel)
    assert marks[1] == approx_mark(tool=0, x=40, y=45, width=10, height=15, tolerance=one_screen_pixel)
    assert viewer.page.evaluate("window.changes.length") == 2
    assert viewer.page.text_content(".iv-count") == "2 marks"
    # A box dragged past the edge stays inside the image.
    viewer.drag((55, 5), (80, -10))
    edge = viewer.marks()[2]
    assert edge["x"] + edge["width"] <= 64 and edge["y"] == 0
    screenshot(viewer.page, "boxes")


def test_marks_are_moved_resized_and_deleted(viewer):
    viewer.show(sky(64, 64, seed=6), tools=TOOLS)
    viewer.drag((10, 10), (20, 20))
    viewer.drag((20, 20), (25, 25))  # the box's top-right corner handle (the box is selected)
    box = viewer.marks()[0]
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx((10, 10, 15, 15), abs=0.2)
    viewer.drag((10, 17), (30, 27))  # grab the left edge: move by (+20, +10)
    box = viewer.marks()[0]
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx((30, 20, 15, 15), abs=0.2)

    viewer.page.click(".iv-tool[data-tool='2']")  # the trail tool
    viewer.drag((5, 50), (40, 60))
    viewer.drag((40, 60), (60, 62))  # its second end
    line = viewer.marks()[1]
    assert line == approx_mark(tool=2, x1=5, y1=50, x2=60, y2=62, tolerance=0.2)
    viewer.page.keyboard.press("Delete")  # the line is selected
    assert [m["tool"] for m in viewer.marks()] == [0]

    viewer.page.click(".iv-tool[data-tool='pan']")
    viewer.page.mouse.click(*viewer.screen(37, 27))  # inside the box selects it in pan mode
    viewer.page.click(".iv-delete")
    assert viewer.marks() == []
    assert viewer.page.evaluate("window.changes.at(-1)") == []


def test_the_keyboard_alone_adds_moves_and_resizes_a_mark(viewer):
    viewer.show(sky(64, 64, seed=7), tools=TOOLS)
    viewer.page.locator(".iv-stage").focus()
    viewer.page.keyboard.press("a")
    box = viewer.marks()[0]
    viewer.page.keyboard.press("ArrowRight")
    viewer.page.keyboard.press("ArrowUp")
    viewer.page.keyboard.press("Shift+ArrowRight")
    moved = viewer.marks()[0]
    assert moved["x"] == pytest.approx(box["x"] + 1) and moved["y"] == pytest.approx(box["y"] + 1)
    assert moved["width"] == pytest.approx(box["width"] + 1) and moved["height"] == pytest.approx(box["height"])
    scale = viewer.view()[0]
    viewer.page.keyboard.press("+")
    assert viewer.view()[0] == pytest.approx(1.5 * scale)
    viewer.page.keyboard.press("0")
    assert viewer.view()[0] == pytest.approx(scale)
    viewer.page.keyboard.press("s")  # cycles the stretch (and leaves the colour composite for one band)
    assert viewer.attr("stretch") == "linear" and viewer.attr("band") == "r"


def test_set_marks_restores_an_earlier_classification_and_clear_marks_empties_it(viewer):
    viewer.show(sky(64, 64, seed=8), tools=TOOLS)
    earlier = [
        {"tool": 0, "x": 3.5, "y": 4.25, "width": 10, "height": 6},
        {"tool": 2, "x1": 1, "y1": 2, "x2": 60, "y2": 63},
    ]
    viewer.page.evaluate("(marks) => window.viewer.setMarks(marks)", earlier)
    assert viewer.marks() == earlier
    viewer.page.evaluate("window.viewer.clearMarks()")
    assert viewer.marks() == []


def test_wheel_zooms_about_the_cursor(viewer):
    viewer.show(sky(64, 64, seed=9))
    before = viewer.screen(16, 48)
    viewer.page.mouse.move(*before)
    viewer.page.mouse.wheel(0, -200)
    viewer.page.wait_for_function("Number(document.querySelector('.iv-stage').dataset.view.split(',')[0]) > 10")
    assert viewer.screen(16, 48) == pytest.approx(before, abs=0.5)  # the point under the cursor stays put


def test_when_the_pixel_data_fails_the_preview_stays_with_a_notice(viewer):
    viewer.show(sky(64, 64, seed=10), data_status=500)
    assert viewer.attr("state") in ("preview-only", "failed")
    assert "pixel data did not load" in viewer.page.text_content(".iv-notice")
    viewer.page.wait_for_function("document.querySelector('.iv').dataset.state === 'preview-only'")
    assert viewer.pixel(32, 32)[3] == 255  # the preview is painted


def touch_gesture(page, tracks: list[list[tuple[float, float]]]) -> None:
    """Fingers moving along `tracks` (one list of points each), as real touch input through the DevTools protocol."""
    session = page.context.new_cdp_session(page)
    for step, kind in enumerate(["touchStart"] + ["touchMove"] * (len(tracks[0]) - 1)):
        points = [
            {"x": t[step][0], "y": t[step][1], "id": i, "radiusX": 4, "radiusY": 4, "force": 1}
            for i, t in enumerate(tracks)
        ]
        session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def track(start: tuple[float, float], end: tuple[float, float], steps: int = 6) -> list[tuple[float, float]]:
    return [(start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])) for t in np.linspace(0, 1, steps)]


def test_on_a_phone_a_finger_draws_a_box_and_two_fingers_pinch_zoom(phone):
    phone.show(sky(256, 256, seed=11), tools=TOOLS)
    scale = phone.view()[0]
    touch_gesture(phone.page, [track(phone.screen(40, 60), phone.screen(120, 100))])
    (box,) = phone.marks()
    tolerance = 2 / scale
    assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx((40, 60, 80, 40), abs=tolerance)
    screenshot(phone.page, "phone")

    a, b = phone.screen(100, 128), phone.screen(156, 128)
    touch_gesture(phone.page, [track(a, (a[0] - 40, a[1])), track(b, (b[0] + 40, b[1]))])
    phone.page.wait_for_function(f"Number(document.querySelector('.iv-stage').dataset.view.split(',')[0]) > {scale}")
    assert len(phone.marks()) == 1  # pinching drew nothing
    # At phone width the display settings fold behind a toggle.
    assert not phone.page.is_visible(".iv-band")
    phone.page.tap(".iv-display-toggle")
    phone.page.select_option(".iv-band", "2")
    assert phone.attr("band") == "i"
    screenshot(phone.page, "phone-zoomed")


def test_float16_decoding_matches_numpy_for_every_bit_pattern(viewer):
    every = np.arange(65536, dtype="<u2")
    decoded = viewer.page.evaluate(
        """async (bytes) => {
             const { decodeFloat16 } = await import('/static/js/viewer/float16.js');
             return Array.from(decodeFloat16(new Uint8Array(bytes).buffer));
           }""",
        list(every.tobytes()),
    )
    np.testing.assert_array_equal(np.array(decoded, dtype=np.float32), every.view("<f2").astype(np.float32))


def test_the_same_viewer_shows_the_next_subject_in_its_own_pixels(viewer):
    viewer.show(sky(64, 64, seed=12), tools=TOOLS)
    viewer.drag((10, 10), (20, 20))
    assert len(viewer.marks()) == 1
    # The next subject is a 256 x 256 field, and its metadata does not say so: the pixels set the extent.
    viewer.show(sky(256, 256, seed=13), tools=TOOLS, name="field", with_shape=False, same_viewer=True)
    assert viewer.marks() == [] and viewer.attr("state") == "pixels"
    viewer.drag((100, 30), (200, 90))
    assert viewer.marks() == [approx_mark(tool=0, x=100, y=30, width=100, height=60, tolerance=2 / viewer.view()[0])]
