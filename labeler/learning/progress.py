"""Live progress of a training run: ``ModelVersion.progress`` (0..1) and ``progress_detail``.

Each write is also the run's heartbeat (the lease in ``triggers.LEASE``). Writes are
throttled to at most one per ``min_interval_s`` so a fast loop of epochs or batches does not
hammer the database; a phase change is always written.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.utils import timezone

from labeler.learning.models import ModelVersion

# Share of a run's time each phase takes, roughly: progress runs through these bands.
PHASES: dict[str, tuple[float, float]] = {
    "preparing": (0.0, 0.2),  # embeddings / loading the data
    "training": (0.2, 0.7),
    "evaluating": (0.7, 0.72),
    "finder": (0.72, 0.8),  # the DLA finder beside a spectrum model (labeler.learning.absorbers)
    "scoring": (0.8, 1.0),
}
MIN_ETA_PROGRESS = 0.02  # below this the ETA would be a wild guess: none is given


class TrainingTimeLimitExceeded(Exception):
    """The run passed SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S; it stops at its next progress report."""


class ProgressReporter:
    """Writes progress for one ModelVersion, at most once per ``min_interval_s``.

    ``eta_s`` extrapolates the time spent so far over the progress made (the phase bands
    above are sized to make that roughly linear); early stopping ends runs sooner.

    ``deadline_s`` is the soft time limit enforced at every report, so it holds on any worker
    pool (Celery's own limits need the prefork pool; the GPU worker runs solo).
    """

    def __init__(
        self,
        version: ModelVersion,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        deadline_s: float | None = None,
    ):
        self.version_id = version.pk
        self.deadline_s = deadline_s
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.started = clock()
        self.last_write = -float("inf")
        self.phase = ""
        self.writes = 0

    def update(
        self,
        phase: str,
        done: float,
        *,
        epoch: int | None = None,
        epochs: int | None = None,
        step: int | None = None,
        force: bool = False,
    ) -> bool:
        """Report ``done`` (0..1) of ``phase``; returns whether it was written."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {sorted(PHASES)}")
        now = self.clock()
        if self.deadline_s is not None and now - self.started > self.deadline_s:
            raise TrainingTimeLimitExceeded(
                f"training stopped in phase {phase!r} after {now - self.started:.0f}s "
                f"(time limit {self.deadline_s:.0f}s, SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S)"
            )
        if not force and phase == self.phase and now - self.last_write < self.min_interval_s:
            return False
        lo, hi = PHASES[phase]
        progress = lo + (hi - lo) * min(max(done, 0.0), 1.0)
        elapsed = now - self.started
        eta = elapsed * (1.0 - progress) / progress if progress >= MIN_ETA_PROGRESS else None
        detail = {
            "phase": phase,
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "eta_s": None if eta is None else round(eta, 1),
            "updated_at": timezone.now().isoformat(),
        }
        ModelVersion.objects.filter(pk=self.version_id).update(
            progress=round(progress, 3), progress_detail=detail, heartbeat_at=timezone.now()
        )
        self.phase, self.last_write = phase, now
        self.writes += 1
        return True

    def epoch_callback(self, phase: str = "training") -> Callable[[int, int, dict], None]:
        """A ``progress(epoch, epochs, metrics)`` callback for mlcore's training loops."""

        def on_epoch(epoch: int, epochs: int, metrics: dict) -> None:
            step = metrics.get("step")
            self.update(
                phase, epoch / max(epochs, 1), epoch=epoch, epochs=epochs, step=int(step) if step is not None else None
            )

        return on_epoch

    def finish(self) -> None:
        ModelVersion.objects.filter(pk=self.version_id).update(
            progress=1.0,
            progress_detail={
                "phase": "done",
                "epoch": None,
                "epochs": None,
                "step": None,
                "eta_s": 0.0,
                "updated_at": timezone.now().isoformat(),
            },
            heartbeat_at=timezone.now(),
        )
