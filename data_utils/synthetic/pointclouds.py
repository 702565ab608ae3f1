"""Synthetic organ-surface point clouds with shape classes and per-point part labels (for PointNet).

Each cloud is ``P`` points sampled on the surface of an organ-like solid built from ellipsoids
(the same primitive as :func:`data_utils.synthetic.phantom.ellipsoid_distance`), by constructive
solid geometry: unions, a subtraction and a cut by a plane. Points are drawn on each primitive's
exact surface, area-weighted, and kept where they lie on the combined solid's surface, so every
point knows which part of the organ it belongs to.

Classes (:data:`CLASS_NAMES`) and their parts (global part ids, :data:`PART_NAMES`, as in the
ShapeNet part-segmentation benchmark):

- ``kidney``: a bean: ellipsoid minus the renal hilum -> parts ``kidney_cortex`` (0), ``kidney_hilum`` (1);
- ``bladder``: a dome on a narrow neck -> ``bladder_dome`` (2), ``bladder_neck`` (3);
- ``vessel_bifurcation``: a trunk splitting into two branches -> ``vessel_trunk`` (4),
  ``vessel_left_branch`` (5), ``vessel_right_branch`` (6);
- ``ventricle``: a bullet-shaped left ventricle cut at the valve plane -> ``ventricle_wall`` (7),
  ``ventricle_base`` (8).

Sizes, proportions and angles vary per cloud. Each cloud is centred and scaled into the unit
sphere (as PointNet expects); ``rotate=True`` applies a uniformly random 3D rotation, so a model
has to learn the shape, not its pose.

Example::

    from data_utils.synthetic import make_pointcloud_dataset
    points, labels, point_labels = make_pointcloud_dataset(128, num_points=512, seed=0)
    points.shape, labels.shape, point_labels.shape    # (128, 512, 3), (128,), (128, 512)
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("kidney", "bladder", "vessel_bifurcation", "ventricle")
PART_NAMES = (
    "kidney_cortex", "kidney_hilum",
    "bladder_dome", "bladder_neck",
    "vessel_trunk", "vessel_left_branch", "vessel_right_branch",
    "ventricle_wall", "ventricle_base",
)
# Global part ids of each class, in the order above.
CLASS_PARTS = {0: (0, 1), 1: (2, 3), 2: (4, 5, 6), 3: (7, 8)}
_CANDIDATES_PER_POINT = 3


def random_rotation_matrix(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly over all 3D orientations (from a random unit quaternion), ``(3, 3)``."""
    w, x, y, z = rng.standard_normal(4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _rotation_about_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


class _Ellipsoid:
    """An ellipsoid ``{p : |R^T (p - c) / radii| <= 1}`` that can sample its surface and test inside."""

    def __init__(self, center, radii, rotation=None):
        self.center = np.asarray(center, np.float64)
        self.radii = np.asarray(radii, np.float64)
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)

    def area(self) -> float:
        # Knud Thomsen's approximation, within about 1 %.
        a, b, c, p = *self.radii, 1.6075
        return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(self, rng, count: int) -> np.ndarray:
        """About ``count`` points uniformly (by area) on the surface, ``(m, 3)``."""
        u = rng.standard_normal((2 * count + 8, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        a, b, c = self.radii
        # Stretching a sphere into an ellipsoid stretches area by this factor: keep points in proportion.
        stretch = np.sqrt((u[:, 0] * b * c) ** 2 + (u[:, 1] * a * c) ** 2 + (u[:, 2] * a * b) ** 2)
        keep = rng.random(len(u)) < stretch / stretch.max()
        return (u[keep][:count] * self.radii) @ self.rotation.T + self.center

    def inside(self, points: np.ndarray) -> np.ndarray:
        q = ((points - self.center) @ self.rotation) / self.radii
        return np.einsum("ij,ij->i", q, q) < 1.0


def _union(rng, parts, num_candidates):
    """Surface points of a union of ellipsoids: on one primitive and inside none of the others."""
    total = sum(e.area() for e, _ in parts)
    points, labels = [], []
    for index, (ellipsoid, part) in enumerate(parts):
        p = ellipsoid.sample(rng, int(np.ceil(num_candidates * ellipsoid.area() / total)) + 1)
        outside = np.ones(len(p), bool)
        for other, (e, _) in enumerate(parts):
            if other != index:
                outside &= ~e.inside(p)
        points.append(p[outside])
        labels.append(np.full(outside.sum(), part))
    return np.concatenate(points), np.concatenate(labels)


def _kidney(rng, m):
    body = _Ellipsoid([0, 0, 0], [1.0, 0.55, 0.42] * rng.uniform(0.85, 1.15, 3))
    hilum = _Ellipsoid([rng.uniform(-0.1, 0.1), body.radii[1] * rng.uniform(0.75, 0.95), 0], [0.32, 0.3, 0.28] * rng.uniform(0.8, 1.2, 3))
    # Subtraction: the body's surface outside the hilum, plus the hilum's surface inside the body.
    total = body.area() + hilum.area()
    p_body = body.sample(rng, int(m * body.area() / total) + 1)
    p_hilum = hilum.sample(rng, int(m * hilum.area() / total) + 1)
    p_body = p_body[~hilum.inside(p_body)]
    p_hilum = p_hilum[body.inside(p_hilum)]
    return np.concatenate([p_body, p_hilum]), np.concatenate([np.zeros(len(p_body), int), np.ones(len(p_hilum), int)])


def _bladder(rng, m):
    dome = _Ellipsoid([0, 0, 0], [0.9, 0.85, 0.72] * rng.uniform(0.85, 1.15, 3))
    neck_radius = rng.uniform(0.16, 0.24)
    neck = _Ellipsoid([0, 0, -dome.radii[2] - 0.15], [neck_radius, neck_radius, rng.uniform(0.4, 0.55)])
    return _union(rng, [(dome, 2), (neck, 3)], m)


def _vessel_bifurcation(rng, m):
    r_trunk = rng.uniform(0.15, 0.22)
    trunk = _Ellipsoid([0, 0, -0.55], [r_trunk, r_trunk, rng.uniform(0.8, 1.0)])
    branches = []
    for sign, part in ((-1, 5), (1, 6)):
        angle = sign * np.deg2rad(rng.uniform(25, 45))
        length = rng.uniform(0.65, 0.9)
        radius = r_trunk * rng.uniform(0.65, 0.85)
        rotation = _rotation_about_y(angle)
        center = np.array([0, 0, 0.15]) + rotation @ np.array([0, 0, length * 0.9])
        branches.append((_Ellipsoid(center, [radius, radius, length], rotation), part))
    return _union(rng, [(trunk, 4)] + branches, m)


def _ventricle(rng, m):
    shell = _Ellipsoid([0, 0, 0], [0.68, 0.68, 1.15] * rng.uniform(0.9, 1.1, 3))
    cut = shell.radii[2] * rng.uniform(0.35, 0.55)  # the valve plane z = cut
    p_wall = shell.sample(rng, m)
    p_wall = p_wall[p_wall[:, 2] < cut]
    # The base: a flat elliptical disc where the plane cuts the ellipsoid, uniform by area, with as
    # many points per unit area as the wall.
    scale = np.sqrt(1 - (cut / shell.radii[2]) ** 2)
    disc_area = np.pi * shell.radii[0] * shell.radii[1] * scale**2
    n_disc = max(1, int(m * disc_area / shell.area()))
    radius, theta = np.sqrt(rng.random(n_disc)), rng.uniform(0, 2 * np.pi, n_disc)
    p_base = np.stack([radius * np.cos(theta) * shell.radii[0] * scale,
                       radius * np.sin(theta) * shell.radii[1] * scale, np.full(n_disc, cut)], axis=1)
    return np.concatenate([p_wall, p_base]), np.concatenate([np.full(len(p_wall), 7), np.full(n_disc, 8)])


_BUILDERS = (_kidney, _bladder, _vessel_bifurcation, _ventricle)


def make_pointcloud_dataset(
    num_clouds: int,
    num_points: int = 512,
    num_classes: int = 4,
    seed: int = 0,
    rotate: bool = True,
    noise: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw organ-surface point clouds with a class per cloud and a part label per point.

    Args:
        num_clouds: number of clouds ``N`` (classes balanced, in random order).
        num_points: points per cloud ``P``.
        num_classes: 2 to 4; keeps the first ``num_classes`` of :data:`CLASS_NAMES`.
        seed: integer seed; the same arguments always give the same clouds.
        rotate: apply a uniformly random 3D rotation to every cloud; False keeps every organ of a
            class in the same canonical pose.
        noise: standard deviation of Gaussian jitter added to each point (after scaling to the
            unit sphere); 0 keeps points exactly on the surface.

    Returns:
        ``(points, labels, point_labels)``: points float32 ``(N, P, 3)`` inside the unit sphere
        (before jitter), labels int32 ``(N,)`` indexing :data:`CLASS_NAMES`, point_labels int32
        ``(N, P)`` indexing :data:`PART_NAMES` (see :data:`CLASS_PARTS` for each class's parts).
    """
    if not 2 <= int(num_classes) <= len(CLASS_NAMES):
        raise ValueError(f"`num_classes` must be between 2 and {len(CLASS_NAMES)}, got {num_classes}.")
    if int(num_clouds) < 1 or int(num_points) < 8:
        raise ValueError(f"need num_clouds >= 1 and num_points >= 8, got {num_clouds} and {num_points}.")
    if noise < 0:
        raise ValueError(f"`noise` must be >= 0, got {noise}.")
    rng = np.random.default_rng(seed)
    # Poses and jitter come from their own stream, so `rotate` and `noise` do not change the shapes.
    pose_rng = np.random.default_rng([int(seed), 1])
    n, p = int(num_clouds), int(num_points)
    labels = rng.permutation(np.arange(n) % int(num_classes)).astype(np.int32)
    points = np.empty((n, p, 3), np.float32)
    point_labels = np.empty((n, p), np.int32)
    for i, label in enumerate(labels):
        candidates, parts = _BUILDERS[label](rng, _CANDIDATES_PER_POINT * p)
        choice = rng.choice(len(candidates), size=p, replace=len(candidates) < p)
        cloud = candidates[choice]
        cloud = cloud - cloud.mean(axis=0)
        cloud /= np.linalg.norm(cloud, axis=1).max()
        if rotate:
            cloud = cloud @ random_rotation_matrix(pose_rng).T
        if noise > 0:
            cloud = cloud + pose_rng.normal(0.0, noise, cloud.shape)
        points[i] = cloud
        point_labels[i] = parts[choice]
    return points, labels, point_labels
