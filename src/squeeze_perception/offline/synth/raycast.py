"""One frame's geometry in an open3d RaycastingScene, with per-triangle labels for every hit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from .meshes import Mesh, merge


@dataclass
class Hits:
    t: np.ndarray  # (N,) distance along the ray (inf where nothing was hit)
    hit: np.ndarray  # (N,) bool
    triangle: np.ndarray  # (N,) int64 index into the scene's triangle arrays, -1 where no hit
    normal: np.ndarray  # (N, 3) float32 triangle normals (as stored, not flipped)


class RayScene:
    """A static snapshot of the world: merged triangles plus material, colour, class and instance per triangle."""

    def __init__(self, static: Mesh, objects: list[tuple[Mesh, int, int]], nthreads: int = 0):
        """objects: (mesh in world, class id, instance id)."""
        meshes = [static] + [m for m, _, _ in objects]
        counts = [len(static.triangles)] + [len(m.triangles) for m, _, _ in objects]
        merged = merge(meshes)
        self.material = merged.material
        self.colour = merged.colour
        self.class_id = np.repeat(np.array([0] + [c for _, c, _ in objects], np.int32), counts)
        self.instance_id = np.repeat(np.array([-1] + [i for _, _, i in objects], np.int32), counts)
        self.nthreads = nthreads
        self.scene = o3d.t.geometry.RaycastingScene()
        if len(merged.triangles):
            self.scene.add_triangles(o3d.core.Tensor(merged.vertices.astype(np.float32)),
                                     o3d.core.Tensor(merged.triangles.astype(np.uint32)))

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """Cast rays (origins broadcast against (N, 3) unit directions)."""
        dirs = np.asarray(directions, np.float32)
        rays = np.empty((len(dirs), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return self.cast_rays(rays)

    def cast_rays(self, rays: np.ndarray) -> Hits:
        """Cast an (N, 6) float32 array of rays (origin, unit direction), as open3d takes them."""
        out = self.scene.cast_rays(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays, np.float32)),
                                   nthreads=self.nthreads)
        t = out["t_hit"].numpy()
        hit = np.isfinite(t)
        tri = out["primitive_ids"].numpy().astype(np.int64)
        tri[~hit] = -1
        return Hits(t=t, hit=hit, triangle=tri, normal=out["primitive_normals"].numpy())


def rotate(vectors: np.ndarray, rotation: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """vectors @ rotation.T for (N, 3) arrays, element-wise (float32 stays float32, else float64).

    numpy hands (N, 3) @ (3, 3) to OpenBLAS, whose threads spin: ~10x the CPU time of this loop.
    """
    v = np.asarray(vectors)
    dtype = np.float32 if v.dtype == np.float32 else np.float64
    v = v.astype(dtype, copy=False)
    r = np.asarray(rotation, dtype)
    if out is None:
        out = np.empty(v.shape, dtype)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    for k in range(3):
        col = out[:, k]
        np.multiply(x, r[k, 0], out=col)
        col += y * r[k, 1]
        col += z * r[k, 2]
    return out


def take_rows(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array[index] for a C-contiguous 2D array, gathering whole rows as single items (3-4x faster)."""
    if array.ndim != 2 or not array.flags.c_contiguous:
        return array[index]
    rows = array.view(np.dtype((np.void, array.dtype.itemsize * array.shape[1]))).ravel()
    return np.take(rows, index).view(array.dtype).reshape(len(index), array.shape[1])
