"""Consensus boxes of a field workflow as a COCO detection data set (Lin et al. 2014, "Microsoft COCO").

``images`` are the subjects (``id`` = subject id, ``file_name`` = the FITS data file under
MEDIA_ROOT, ``width``/``height`` its data array's size), ``categories`` the workflow's box
tools (``id`` = tool index + 1, as COCO counts from 1) and ``annotations`` the consensus boxes:
``bbox = [x, y, width, height]`` in pixels of the FITS data array as numpy reads it, x = column,
y = row, (0, 0) the outer corner of pixel [0, 0], so ``data[..., y:y+h, x:x+w]`` is the box.
FITS row 0 is the bottom of the displayed image: for a top-down raster such as the preview PNG,
use ``y' = height - y - h``. Each annotation also carries the volunteers' ``support``, the
median ``iou`` of their boxes with it and the ``spread`` (pixels) of their edges.

Streaming: images are written as they are read; annotations go to a side file that is
appended at the end, so memory stays one chunk whatever the number of subjects.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from labeler.catalogs.columns import Record

INFO_DESCRIPTION = (
    "Consensus boxes. bbox = [x, y, width, height] in pixels of the FITS data array: x = column, y = row, "
    "(0, 0) the corner of pixel [0, 0]; FITS row 0 is the bottom of the displayed image, so for a top-down "
    "raster use y' = height - y - h."
)


class CocoError(ValueError):
    """The workflow cannot be exported as COCO (it has no box tool)."""


def box_tools(tree: Mapping) -> list[tuple[int, Mapping]]:
    tools = (tree.get("marks") or {}).get("tools", [])
    return [(i, tool) for i, tool in enumerate(tools) if tool["type"] == "box"]


def coco_write(path: Path, tree: Mapping, chunks: Iterable[list[Record]], provenance: Mapping, progress=None) -> int:
    """Write the COCO JSON to ``path``; returns the number of images (subjects)."""
    tools = box_tools(tree)
    if not tools:
        raise CocoError("this workflow has no box tool, so there are no boxes to export as COCO")
    info = {"description": INFO_DESCRIPTION, "version": str(provenance["workflow_version"]),
            "date_created": provenance["export_time_utc"], "contributor": provenance["software"],
            "skyloop": dict(provenance)}  # fmt: skip
    categories = [{"id": i + 1, "name": tool["label"], "supercategory": "object"} for i, tool in tools]
    n_images = n_boxes = 0
    with open(path, "w", encoding="utf-8") as out, tempfile.TemporaryFile("w+", encoding="utf-8") as boxes:
        out.write('{"info": ' + json.dumps(info) + ', "licenses": [], "categories": ' + json.dumps(categories))
        out.write(', "images": [')
        for chunk in chunks:
            for record in chunk:
                out.write((",\n" if n_images else "\n") + json.dumps(_image(record)))
                n_images += 1
                for annotation in _annotations(record, tools):
                    n_boxes += 1
                    annotation["id"] = n_boxes
                    boxes.write((",\n" if n_boxes > 1 else "\n") + json.dumps(annotation))
            if progress:
                progress(len(chunk))
        out.write('\n], "annotations": [')
        boxes.seek(0)
        shutil.copyfileobj(boxes, out)
        out.write("\n]}\n")
    return n_images


def _image(record: Record) -> dict:
    shape = record.metadata.get("shape") or [0, 0]
    return {
        "id": record.subject_id,
        "file_name": record.data_file,
        "width": int(shape[-1]),
        "height": int(shape[-2]),
        "skyloop_external_id": record.external_id,
        "ra": record.ra,
        "dec": record.dec,
    }


def _annotations(record: Record, tools: list[tuple[int, Mapping]]) -> list[dict]:
    marks = (record.consensus or {}).get("marks") or {}
    out = []
    for index, _tool in tools:
        entry = marks.get(str(index)) or {}
        if entry.get("type") != "box":
            continue
        for cluster in entry.get("clusters") or []:
            w, h = cluster["width"], cluster["height"]
            out.append(
                {
                    "image_id": record.subject_id,
                    "category_id": index + 1,
                    "bbox": [cluster["x"], cluster["y"], w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "support": cluster.get("support"),
                    "iou": cluster.get("iou"),
                    "spread": cluster.get("spread"),
                }
            )
    return out
