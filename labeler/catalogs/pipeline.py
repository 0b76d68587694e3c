"""Two stages of a table export at once: reading chunks (database, JSON) and writing them.

The main thread reads chunks (the only thread that touches the database: Django connections
are per thread); a writer thread turns each chunk into columns and writes them. SQLite,
PostgreSQL's driver, pyarrow and numpy release the GIL for their heavy work, so on two cores
the stages overlap. The queue holds one chunk, so at most three are in memory at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence

from labeler.catalogs import columns

_DONE = object()


def chunks_write(*, writer, groups: Sequence, chunks: Iterable, advance: Callable[[int], None]) -> int:
    """Write every chunk through ``writer`` on a background thread; return the rows written.

    An error on either side stops both and is raised here; the caller aborts the writer.
    ``advance(n)`` is called on this thread as chunks are handed over.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    failure: list[BaseException] = []

    def write_all() -> None:
        while (chunk := handoff.get()) is not _DONE:
            if failure:
                continue  # drain: the reader must never block on a dead writer
            try:
                writer.write(columns.chunk_arrays(groups, chunk))
            except BaseException as exc:  # handed to the main thread, which raises it
                failure.append(exc)

    thread = threading.Thread(target=write_all, name="catalog-writer", daemon=True)
    thread.start()
    n_rows = 0
    try:
        for chunk in chunks:
            if failure:
                break
            handoff.put(chunk)
            n_rows += len(chunk)
            advance(len(chunk))
    finally:
        handoff.put(_DONE)
        thread.join()
    if failure:
        raise failure[0]
    return n_rows
