"""Surface materials: how each kind of surface looks to the camera and to the laser.

Reflectivity is the fraction of the 905 nm pulse a surface sends back at normal incidence,
on KITTI's 0..1 intensity scale (asphalt dark, paint and vegetation bright, licence plates and
lamps retro-reflective). ``dropout`` is the extra chance a return is lost on that surface
(glass and black tyres swallow or deflect the pulse, foliage lets it through, which leaves holes
in real scans). Other surfaces have none of their own: the sensor's generic loss of single firings
is measured per ring on real scans (``kitti.hdl64e_dropout``) and applied to every surface.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class Material(IntEnum):
    ASPHALT = 0
    LANE_PAINT = 1
    CONCRETE = 2  # curbs
    SIDEWALK = 3
    GRASS = 4
    FACADE = 5
    WALL = 6
    FOLIAGE = 7
    BARK = 8
    METAL = 9  # poles, bike frames, signs
    PAINT = 10  # car bodies
    GLASS = 11
    TYRE = 12
    LAMP = 13
    PLATE = 14
    CLOTH = 15
    SKIN = 16
    ROOF = 17
    PAINT_MATTE = 18  # car bodies: flat or weathered paint
    PAINT_GLOSSY = 19  # car bodies: fresh metallic paint


# material -> (reflectivity, dropout probability, specular strength for the camera, texture kind)
PROPERTIES: dict[Material, tuple[float, float, float, str]] = {
    Material.ASPHALT: (0.27, 0.0, 0.02, "asphalt"),
    Material.LANE_PAINT: (0.55, 0.0, 0.05, "asphalt"),
    Material.CONCRETE: (0.32, 0.0, 0.03, "concrete"),
    Material.SIDEWALK: (0.30, 0.0, 0.02, "tiles"),
    Material.GRASS: (0.42, 0.0, 0.0, "grass"),
    Material.FACADE: (0.32, 0.0, 0.05, "facade"),
    Material.WALL: (0.30, 0.0, 0.02, "bricks"),
    Material.FOLIAGE: (0.45, 0.12, 0.0, "foliage"),
    Material.BARK: (0.30, 0.0, 0.0, "bark"),
    Material.METAL: (0.40, 0.0, 0.40, "plain"),
    Material.PAINT: (0.35, 0.0, 0.55, "plain"),
    Material.GLASS: (0.08, 0.45, 0.80, "glass"),
    Material.TYRE: (0.05, 0.25, 0.05, "plain"),
    Material.LAMP: (0.85, 0.0, 0.6, "plain"),
    Material.PLATE: (0.95, 0.0, 0.3, "plain"),
    Material.CLOTH: (0.30, 0.0, 0.02, "cloth"),
    Material.SKIN: (0.35, 0.0, 0.05, "plain"),
    Material.ROOF: (0.25, 0.0, 0.05, "plain"),
    Material.PAINT_MATTE: (0.35, 0.0, 0.2, "plain"),
    Material.PAINT_GLOSSY: (0.35, 0.0, 0.8, "plain"),
}
# Car paint in its three glosses: the LiDAR treats them alike (reflectivity from the colour, glossy return).
PAINTS = (Material.PAINT, Material.PAINT_MATTE, Material.PAINT_GLOSSY)

N_MATERIALS = len(Material)
IS_PAINT = np.isin(np.arange(N_MATERIALS), PAINTS)
REFLECTIVITY = np.array([PROPERTIES[Material(i)][0] for i in range(N_MATERIALS)], dtype=np.float32)
DROPOUT = np.array([PROPERTIES[Material(i)][1] for i in range(N_MATERIALS)], dtype=np.float32)
# Foliage lets part of the pulses through its gaps (its dropout is that share): they go on to what is behind.
PASSES_THROUGH = np.isin(np.arange(N_MATERIALS), (Material.FOLIAGE,))
# Glass and tyres swallow or return the pulses of a whole face at once (a window is dark or it is not);
# their dropout is drawn once per triangle and scan, not per firing, so it leaves whole missing faces
# rather than scattered single holes (which real scans show far fewer of; see offline/synth/scan_compare.py).
COHERENT_DROPOUT = np.isin(np.arange(N_MATERIALS), (Material.GLASS, Material.TYRE))
SPECULAR = np.array([PROPERTIES[Material(i)][2] for i in range(N_MATERIALS)], dtype=np.float32)
TEXTURE_KINDS = sorted({p[3] for p in PROPERTIES.values()})
TEXTURE = np.array([TEXTURE_KINDS.index(PROPERTIES[Material(i)][3]) for i in range(N_MATERIALS)], dtype=np.int64)
