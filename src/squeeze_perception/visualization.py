"""One table of class colours for everything that draws: RViz markers (squeezeseg and tracker
nodes), the annotated camera image (squeezedet node), rendered frames and documentation figures
(offline render / synth figures). A class looks the same in every view, so a car box in the
image, its points in the cloud and its track in RViz are recognisably the same thing.

Indexed by class id (interfaces.CLASS_NAMES: unknown, car, pedestrian, cyclist); ids outside the
table draw as "unknown".
"""
from __future__ import annotations

from .interfaces import CLASS_NAMES

# RGB in [0, 1]: unknown grey, car red, pedestrian blue, cyclist green.
CLASS_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.6, 0.6, 0.6), (0.9, 0.2, 0.2), (0.2, 0.4, 0.95), (0.2, 0.85, 0.3))

assert len(CLASS_COLOURS) == len(CLASS_NAMES), "one colour per class of interfaces.CLASS_NAMES"


def class_colour(class_id: int) -> tuple[float, float, float]:
    """RGB in [0, 1] (RViz, matplotlib)."""
    cid = int(class_id)
    return CLASS_COLOURS[cid] if 0 <= cid < len(CLASS_COLOURS) else CLASS_COLOURS[0]


def class_colour_uint8(class_id: int) -> tuple[int, int, int]:
    """RGB in 0..255 (PIL drawing on images)."""
    return tuple(int(round(255 * c)) for c in class_colour(class_id))  # type: ignore[return-value]
