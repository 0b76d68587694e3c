"""The volunteer benchmark (issue #3): the classify page in headless Chromium against gunicorn.

Figures (bench/results/volunteer.json):
- next_subject_ms_p50 / _p90: Done pressed -> the next subject drawn by its viewer (real pixels or the
  interactive plot on screen), from the page's own ``performance.measure("skyloop:next")``, for a
  volunteer who looks at each object for THINK_S seconds (image and spectrum subjects together);
  ``next_subject_ms_p50_image`` / ``_spectrum`` split them.
- next_subject_ms_p50_no_pause: the same when every answer is keyed in as fast as possible, so the
  prefetch has no time to work ahead: the worst case.
- bytes_per_image_subject / bytes_per_spectrum_subject: bytes received (response headers + bodies, as
  sent on the wire) per classified subject: its preview and data plus the API JSON of the session
  (next, submit, progress) divided by the subjects classified. Counted once the page and its scripts
  have loaded; the subjects prefetched but not yet classified at the end are left out.
  ``bytes_per_<kind>_subject_preview`` / ``_data`` / ``_api`` split them.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from django.utils import timezone

from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.testing import purge_gpu_queue, start_gunicorn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
N_PER_WORKFLOW = 25
THINK_S = 1.0
# Keys that take each workflow's tree to its end (then Enter = Done where there are marks to draw).
ANSWER_KEYS = {"image": ["3", "1"], "spectrum": ["2", "Enter"]}
SUBJECT_URL = re.compile(r"/subjects/(\d+)/(preview|data)-")


def run(results: Path) -> dict:
    from playwright.sync_api import sync_playwright

    purge_gpu_queue()
    plan = SkyPlan(
        project=f"bench-volunteer-{timezone.now():%Y%m%d%H%M%S}",
        n_images=3 * N_PER_WORKFLOW,
        n_spectra=3 * N_PER_WORKFLOW,
        n_fields=0,
        seed=7,
        gold_fraction=0.0,
        train_min_new_labels=10**6,  # no training: this measures the page, not the worker
    )
    project = sky_simulate(plan=plan)
    workflows = {kind: project.workflows.get(kind=kind) for kind in ANSWER_KEYS}
    logs = results.parent / "logs"
    logs.mkdir(exist_ok=True)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop shares this thread
    server, base = start_gunicorn(logs / "gunicorn-volunteer.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            sessions = {kind: _classify(browser, base, wf.id, kind, THINK_S) for kind, wf in workflows.items()}
            bursts = [_classify(browser, base, wf.id, kind, 0.0) for kind, wf in workflows.items()]
            browser.close()
    finally:
        server.stop()
    paused = np.concatenate([s["next_ms"] for s in sessions.values()])
    figures = {
        "next_subject_ms_p50": float(np.percentile(paused, 50)),
        "next_subject_ms_p90": float(np.percentile(paused, 90)),
        "next_subject_ms_p50_image": float(np.median(sessions["image"]["next_ms"])),
        "next_subject_ms_p50_spectrum": float(np.median(sessions["spectrum"]["next_ms"])),
        "next_subject_ms_p50_no_pause": float(np.median(np.concatenate([b["next_ms"] for b in bursts]))),
        "think_time_s": THINK_S,
    }
    for kind, session in sessions.items():
        figures[f"bytes_per_{kind}_subject"] = session["bytes"]["total"]
        for part in ("preview", "data", "api"):
            figures[f"bytes_per_{kind}_subject_{part}"] = session["bytes"][part]
    _plot(results / "volunteer.png", sessions, bursts)
    return figures


def _classify(browser, base: str, workflow_id: int, kind: str, think_s: float) -> dict:
    """One fresh volunteer classifies N_PER_WORKFLOW subjects; returns their timings and bytes."""
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    received: list[tuple[str, int]] = []
    counting = False

    def finished(request):
        if counting:
            sizes = request.sizes()
            received.append((request.url, sizes["responseHeadersSize"] + sizes["responseBodySize"]))

    page.on("requestfinished", finished)
    page.goto(f"{base}/classify/{workflow_id}/")
    if page.locator("dialog#tutorial[open]").count():
        page.click("dialog#tutorial button[type=submit]")
    shown = [_wait_drawn(page, None)]
    counting = True
    for _ in range(N_PER_WORKFLOW):
        if think_s:
            page.wait_for_timeout(think_s * 1000)
        for key in ANSWER_KEYS[kind]:
            page.keyboard.press(key)
        shown.append(_wait_drawn(page, shown[-1]))
    page.wait_for_function("document.getElementById('classifier').dataset.waiting === '0'")
    counting = False
    next_ms = page.evaluate("performance.getEntriesByName('skyloop:next').map((m) => m.duration)")
    context.close()
    if len(next_ms) != N_PER_WORKFLOW:
        raise RuntimeError(f"{kind}: {len(next_ms)} skyloop:next measures for {N_PER_WORKFLOW} subjects")
    return {"next_ms": np.asarray(next_ms), "bytes": _bytes_per_subject(received, shown[:-1])}


def _wait_drawn(page, after: int | None) -> int:
    page.wait_for_function(
        "([after]) => { const d = document.getElementById('classifier').dataset.drawn;"
        " return d && d !== String(after); }",
        arg=[after],
        timeout=60_000,
    )
    return int(page.get_attribute("#classifier", "data-drawn"))


def _bytes_per_subject(received: list[tuple[str, int]], classified: list[int]) -> dict[str, float]:
    """Mean bytes per classified subject: its preview, its data, and its share of the API calls."""
    per_part: dict[tuple[int, str], int] = defaultdict(int)
    api = 0
    for url, size in received:
        match = SUBJECT_URL.search(url)
        if match:
            per_part[int(match.group(1)), match.group(2)] += size
        elif "/api/" in url:
            api += size
    n = len(classified)
    parts = {part: sum(per_part[s, part] for s in classified) / n for part in ("preview", "data")}
    return parts | {"api": api / n, "total": sum(parts.values()) + api / n}


def _plot(path: Path, sessions: dict, bursts: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for kind, session in sessions.items():
        ax.hist(session["next_ms"], bins=20, alpha=0.7, label=f"{kind}, {THINK_S:g}s per object")
    ax.hist(np.concatenate([b["next_ms"] for b in bursts]), bins=20, alpha=0.5, label="no pause", color="k")
    ax.set_xlabel("Done -> next subject drawn (ms)")
    ax.set_ylabel("subjects")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
