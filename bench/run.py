"""make bench: run every benchmark module, write bench/results/<name>.json (flat {name: number}) + plots.

Usage: python bench/run.py [name ...]   (default: all of BENCHMARKS)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = [
    "loop", "consensus", "volunteer", "active", "models", "inference", "inference_accuracy", "export", "load", "faults",
    "lenses", "hotpath", "trails",
]  # fmt: skip

# Parts of a larger benchmark that also run alone: run alone, each replaces the figures it
# measures (names with these prefixes) in the larger one's file, which then holds the latest of each.
PART_OF = {
    "active_select": ("active", ("select_", "repeat", "queue_build_", "overclassified_")),
    "inference": ("models", ("inference_cutouts_per_s_",)),
    "models_detector": ("models", ("detector_",)),
}


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeler.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main(names: list[str]) -> None:
    setup_django()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names or BENCHMARKS:
        module = __import__(f"bench.{name}", fromlist=["run"])
        started = time.monotonic()
        figures = module.run(RESULTS)
        bad = {k: v for k, v in figures.items() if not isinstance(v, int | float)}
        if bad:
            raise SystemExit(f"benchmark {name} returned non-numbers: {bad}")
        write(name, figures)
        if name in PART_OF:
            refresh(name, figures)
        print(f"{name}: {json.dumps(figures)} ({time.monotonic() - started:.0f}s)")


def write(name: str, figures: dict) -> None:
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def refresh(name: str, figures: dict) -> None:
    """Copy a part's figures into its larger benchmark's file (none yet: nothing to refresh)."""
    parent, prefixes = PART_OF[name]
    path = RESULTS / f"{parent}.json"
    if path.exists():
        mine = {k: v for k, v in figures.items() if k.startswith(prefixes)}
        write(parent, {**json.loads(path.read_text()), **mine})


if __name__ == "__main__":
    main(sys.argv[1:])
