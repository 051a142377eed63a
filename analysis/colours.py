"""The colours of regions and variants, one table for the report's charts and the web UI.

Each known region has one fixed colour (Okabe-Ito, colour-blind safe) wherever it is drawn,
so a reader who learned "uk is orange" in the report sees orange in the live chart too.
No matplotlib here: the web UI runs inside Locust processes.
"""

from __future__ import annotations

from typing import Sequence

REGION_COLOURS = {
    "us": "#0072B2",
    "uk": "#D55E00",
    "eu": "#009E73",
    "self-serve": "#CC79A7",
}
SPARE_COLOURS = ["#E69F00", "#56B4E9", "#000000", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD"]
VARIANT_COLOURS = ["#4C6A92", "#C9A227", "#7A9E7E", "#B5651D", "#8E7CC3", "#5F9EA0"]


def region_colours(regions: Sequence[str]) -> dict[str, str]:
    """The fixed colour of each region; other regions take the spare colours in order."""
    out = {r: REGION_COLOURS[r] for r in regions if r in REGION_COLOURS}
    others = [r for r in regions if r not in out]
    for i, r in enumerate(others):
        out[r] = SPARE_COLOURS[i % len(SPARE_COLOURS)]
    return {r: out[r] for r in regions}


def variant_colours(variants: Sequence[str]) -> dict[str, str]:
    """Variants in their order of appearance (the control first) take VARIANT_COLOURS."""
    return {v: VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i, v in enumerate(variants)}
