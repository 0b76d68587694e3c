"""Tutorials and field guides: scientists write Markdown, volunteers get sanitised HTML.

``render_markdown`` is the only way Markdown becomes HTML in Skyloop: Python-Markdown
(tables, fenced code), then nh3 (the Ammonia sanitiser) keeps an allow-list of tags and
attributes and only http(s)/mailto/relative links, so a workflow's text can never run a
script in a volunteer's browser. ``DEFAULT_GUIDES`` are starting texts for each kind of
workflow, for the simulated demo and for scientists to adapt.
"""

from __future__ import annotations

from functools import lru_cache

import markdown
import nh3

ALLOWED_TAGS = frozenset(
    {
        "p",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "em",
        "strong",
        "b",
        "i",
        "sub",
        "sup",
        "code",
        "pre",
        "kbd",
        "blockquote",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "a",
        "img",
        "figure",
        "figcaption",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "details",
        "summary",
    }
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "th": {"align", "colspan", "rowspan"},
    "td": {"align", "colspan", "rowspan"},
    "ol": {"start"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})


@lru_cache(maxsize=128)
def render_markdown(text: str) -> str:
    """Markdown -> HTML that is safe to insert into a page as is (empty text -> "")."""
    if not text.strip():
        return ""
    html = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        clean_content_tags={"script", "style"},
        link_rel="noopener noreferrer nofollow",
    )


_IMAGE_TUTORIAL = """\
## Welcome to galaxy morphology

You will see small colour images of objects from a sky survey. Each one is a real
measurement: its colours come from the g, r and i filters (blue, green, red).

1. **Look** at the object in the centre. Use the stretch menu (linear, sqrt, log, asinh)
   to bring out faint structure; zoom with the mouse wheel or two fingers, drag to pan.
2. **Answer** the questions. Press the answer's number key (1–9) or click it. Some answers
   lead to a follow-up question; *Back* returns to the previous one.
3. **Done.** The next object appears at once. Made a mistake? Your recent classifications can be edited or
   withdrawn for 24 hours.

Now and then you will see an object the scientists have already classified. Afterwards we
tell you what they said, so you can calibrate your eye. Nobody gets every one right: the
faint, ambiguous ones are exactly why your votes are needed.
"""

_IMAGE_FIELD_GUIDE = """\
## Smooth

Light fades evenly from a bright centre, with no arms, bar or disk. **Round** ones look
like a circle; **cigar-shaped** ones are stretched out, with rounded ends.

## Features or disk

Anything with structure: spiral arms, a bar through the centre, clumps or knots, or a
flat disk. An **edge-on disk** is a thin streak, sometimes with a small bulge in the middle.

## Star or artefact

A **star** is a sharp, round point, the same size as every other star in the image,
often with the same colour in every band. **Artefacts** are not on the sky: cosmic rays
(sharp specks in a single band, so they look pure blue, green or red), satellite trails
(straight lines), ghosts (faint rings) and bad columns.

## Odd

Two galaxies overlapping or touching, tidal tails, shells or a distorted shape:
answer *Yes* to "anything odd?".

| Key | Action |
| --- | --- |
| <kbd>1</kbd>–<kbd>9</kbd> | choose an answer |
"""

_SPECTRUM_TUTORIAL = """\
## Welcome to the damped Lyman-alpha hunt

Each subject is the spectrum of a distant quasar: brightness (flux, black) against
observed wavelength, with its 1σ noise in grey. On its way to us, the light passes
through gas clouds. A cloud with more than 2×10²⁰ hydrogen atoms per cm² along the line
of sight (a *damped Lyman-alpha absorber*, DLA) absorbs a broad trough that goes right
down to zero flux.

1. Find the quasar's own **Lyman-alpha emission** peak (marked by the line list at the
   quasar's redshift). DLAs lie to its **left** (bluer), in the forest of narrow lines.
2. Look for a trough much **wider** than the forest lines, flat at zero in the middle,
   with smooth curved **wings** on both sides.
3. Answer the question. If the workflow asks for marks, click the trough's centre and
   move the column-density slider until the overlaid profile matches the wings.
"""

_SPECTRUM_FIELD_GUIDE = """\
## A damped Lyman-alpha absorber (DLA)

- A trough tens of ångströms wide that reaches **zero flux**.
- **Damping wings**: the edges curve smoothly back up to the continuum; the trough gets
  wider as the column density grows (its width grows as the square root of N<sub>HI</sub>).
- Often a matching narrower **Lyman-beta** trough at 1025.7/1215.7 of its wavelength.
- log N<sub>HI</sub> ≥ 20.3 is a DLA; 19 to 20.3 is a *sub-DLA*.

## Not a DLA

- The **Lyman-alpha forest**: many narrow lines, each only a few ångströms wide.
- **Noise**: single low pixels, or regions where the grey error band is as large as the flux.
- **Broad absorption lines** (BAL quasars): wide troughs just blueward of the quasar's
  own emission lines such as C IV 1549 Å, with irregular edges and no damping wings.

## Hotkeys

| Key | Action |
| --- | --- |
| <kbd>1</kbd>–<kbd>9</kbd> | choose an answer |
"""

_FIELD_TUTORIAL = """\
## Welcome to survey fields

Each subject is a larger piece of a survey image, with many stars and galaxies in it.
Your job is to **draw**:

- a **box** round every galaxy (fuzzy, extended, often elongated),
- a **box** round every star (a sharp round point), and
- a **line** along every asteroid or satellite **trail** (a straight streak, sometimes
  only in one colour because the object moved between exposures).

Pick a tool, then drag on the image. Drag a mark's corners or ends to adjust it, or
select it and delete it. Zoom in for faint objects. When every object you can see is
marked, press **Done**. It is fine to leave out objects you are unsure of: other
volunteers see the same field, and marks that several people agree on are what counts.
"""

_FIELD_FIELD_GUIDE = """\
## Galaxy (box)

Extended and fuzzy, larger than the stars around it, often elliptical or with a disk.
Draw the box tight round the visible light, not round the halo of noise.

## Star (box)

A sharp round point; brighter stars have the same shape, only bigger. A very bright
star may bleed a vertical spike along its column: box the star, and do not draw the
spike as a trail.

## Trail (line)

A straight streak across part or all of the field: asteroids leave short dashes,
satellites long bright lines. Draw the line from one end of the streak to the other.
A trail is straight and crosses the field at any angle; a vertical streak that starts
at a bright star is that star's bleed, not a trail.

## Artefacts (no mark)

Cosmic rays (sharp specks in one band), bad columns and ghosts are not on the sky.
"""

DEFAULT_GUIDES: dict[str, dict[str, str]] = {
    "image": {"tutorial": _IMAGE_TUTORIAL, "field_guide": _IMAGE_FIELD_GUIDE},
    "spectrum": {"tutorial": _SPECTRUM_TUTORIAL, "field_guide": _SPECTRUM_FIELD_GUIDE},
    "field": {"tutorial": _FIELD_TUTORIAL, "field_guide": _FIELD_FIELD_GUIDE},
}
