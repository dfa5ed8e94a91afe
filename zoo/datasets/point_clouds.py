"""Point clouds: ModelNet40 (OFF meshes or the HDF5 release), PLY files and npz files with normals.

A point cloud is an :class:`~zoo.graph.AtomsGraph` without atomic numbers: ``pos [P, 3]`` (the shape's units),
``x [P, 3]`` unit normals (or ``x [P, 1]`` ones when there are none), ``y [1]`` long class label when known.

Layouts:

- ModelNet40 OFF (``ModelNet40.zip`` of Princeton): ``root/ModelNet40/<class>/{train,test}/<name>.off``;
  classes are the sorted folder names; ``num_points`` points are sampled on each mesh, uniformly by area
  (seeded per shape, so an item is the same every time), with the normals of their faces.
- ModelNet40 HDF5 (``modelnet40_ply_hdf5_2048``, PointNet): ``ply_data_{train,test}<k>.h5`` with ``data
  [B, 2048, 3]``, ``label [B, 1]`` and, if present, ``normal [B, 2048, 3]``; needs ``h5py``.
- PLY (ASCII or binary): the ``vertex`` element's ``x, y, z`` and, if present, ``nx, ny, nz``.
- npz: ``points`` (or ``pos``) ``[P, 3]``, optional ``normals [P, 3]`` and ``label``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from zoo.datasets.base import DatasetError, FrameError, StructureDataset, Transform
from zoo.graph import AtomsGraph, GraphError

__all__ = ["ModelNet40", "PointCloudFileDataset", "read_off", "read_ply", "sample_surface"]

PathLike = str | os.PathLike[str]
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip


def read_off(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` and triangles ``[F, 3]`` of an OFF mesh (polygons are fanned into triangles; the
    ModelNet quirk of counts on the ``OFF`` line itself is accepted).

    Raises:
        GraphError: not an OFF file, or fewer numbers than the header announces (truncated).
    """
    tokens = Path(path).read_text().split()
    if not tokens or not tokens[0].startswith("OFF"):
        raise GraphError("not an OFF file: the first word is not OFF")
    header = tokens[0][3:]
    rest = ([header] if header else []) + tokens[1:]
    try:
        num_vertices, num_faces = int(rest[0]), int(rest[1])
        values = rest[3:]
        vertices = np.array(values[: 3 * num_vertices], dtype=np.float64).reshape(num_vertices, 3)
        position = 3 * num_vertices
        triangles = []
        for _ in range(num_faces):
            count = int(values[position])
            polygon = [int(value) for value in values[position + 1 : position + 1 + count]]
            if len(polygon) != count:
                raise IndexError("face list ends early")
            triangles += [(polygon[0], polygon[k], polygon[k + 1]) for k in range(1, count - 1)]
            position += count + 1
    except (IndexError, ValueError) as error:
        raise GraphError(f"the OFF file is truncated or malformed ({error})") from error
    faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise GraphError(f"faces refer to vertices outside 0..{num_vertices - 1}")
    return vertices, faces


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` points uniformly on the surface of a triangle mesh and the unit normals of their faces.

    Returns:
        ``(points [P, 3], normals [P, 3])``.
    """
    corners = vertices[faces]  # [F, 3, 3]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # [F, 3]
    area = np.linalg.norm(cross, axis=1)
    if not faces.size or area.sum() <= 0:
        raise GraphError("the mesh has no surface (no faces, or all of zero area)")
    chosen = rng.choice(len(faces), size=num_points, p=area / area.sum())
    u, v = rng.random((2, num_points))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
    points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    normals = cross[chosen] / area[chosen][:, None].clip(min=1e-300)
    return points, normals


def read_ply(path: PathLike) -> dict[str, np.ndarray]:
    """The ``vertex`` properties of a PLY file (ASCII, binary little- or big-endian) as arrays, by name.

    Raises:
        GraphError: not a PLY file, an unsupported layout (lists before the vertices), or fewer vertices than the
            header announces (truncated).
    """
    blob = Path(path).read_bytes()
    end = blob.find(b"end_header")
    if not blob.startswith(b"ply") or end < 0:
        raise GraphError("not a PLY file (no 'ply' magic or no end_header)")
    header = blob[:end].decode("ascii", errors="replace").splitlines()
    body = blob[blob.index(b"\n", end) + 1 :]
    fmt, elements, current = "ascii", [], None
    for line in header:
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            current = (words[1], int(words[2]), [])
            elements.append(current)
        elif words[:1] == ["property"] and current is not None:
            if words[1] == "list":
                current[2].append(("list", words[-1]))
            else:
                current[2].append((_PLY_TYPES.get(words[1], "f4"), words[2]))
    if not elements or elements[0][0] != "vertex" or any(kind == "list" for kind, _ in elements[0][2]):
        raise GraphError("only PLY files whose first element is 'vertex' with scalar properties are supported")
    _, count, properties = elements[0]
    names = [name for _, name in properties]
    try:
        if fmt == "ascii":
            lines = body.decode("ascii").splitlines()[:count]
            table = np.array([[float(v) for v in line.split()[: len(names)]] for line in lines], dtype=np.float64)
            if table.shape != (count, len(names)):
                raise ValueError(f"{table.shape[0]} vertex lines, the header announces {count}")
            return {name: table[:, column] for column, name in enumerate(names)}
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + kind) for kind, name in properties])
        if len(body) < count * dtype.itemsize:
            raise ValueError(f"{len(body) // dtype.itemsize} vertices, the header announces {count}")
        table = np.frombuffer(body, dtype=dtype, count=count)
        return {name: table[name].astype(np.float64) for name in names}
    except (ValueError, UnicodeDecodeError) as error:
        raise GraphError(f"the PLY file is truncated or malformed ({error})") from error


def _cloud(points: np.ndarray, normals: np.ndarray | None, label: int | None, dtype: torch.dtype) -> AtomsGraph:
    pos = torch.as_tensor(points, dtype=dtype)
    if normals is not None:
        features = torch.as_tensor(normals, dtype=dtype)
        if features.shape != pos.shape:
            raise GraphError(f"normals have shape {list(features.shape)}, points {list(pos.shape)}")
    else:
        features = torch.ones(pos.shape[0], 1, dtype=dtype)
    if not bool(torch.isfinite(features).all()):
        raise GraphError("normals contain NaN or inf")
    fields = {"y": torch.tensor([label], dtype=torch.long)} if label is not None else {}
    return AtomsGraph.build(pos, x=features, **fields)


class ModelNet40(StructureDataset):
    """ModelNet40 (or any ModelNet-style tree) from the OFF layout or the HDF5 release.

    Args:
        root: directory holding ``ModelNet40/`` (OFF) or ``modelnet40_ply_hdf5_2048/`` (HDF5), or that directory.
        split: ``"train"`` or ``"test"``.
        num_points: points sampled per OFF mesh (HDF5 clouds are used as stored).
        seed: base seed of the sampling (shape ``i`` uses ``seed + i``).
        transform: applied to each cloud.
        dtype: float dtype of points and normals.

    Raises:
        FrameError: neither layout under ``root``.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        split: str = "train",
        num_points: int = 1024,
        seed: int = 0,
        transform: Transform | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(transform)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        self.num_points, self.seed, self.dtype = num_points, seed, dtype
        off_root = next((path for path in (root / "ModelNet40", root) if any(path.glob(f"*/{split}/*.off"))), None)
        h5_root = next(
            (path for path in (root / "modelnet40_ply_hdf5_2048", root) if any(path.glob(f"ply_data_{split}*.h5"))),
            None,
        )
        if off_root is not None:
            self.classes = sorted(path.name for path in off_root.iterdir() if (path / split).is_dir())
            self._items = [
                (path, label)
                for label, name in enumerate(self.classes)
                for path in sorted((off_root / name / split).glob("*.off"))
            ]
            self._arrays = None
        elif h5_root is not None:
            self._load_h5(sorted(h5_root.glob(f"ply_data_{split}*.h5")), h5_root)
        else:
            raise FrameError(
                str(root),
                f"no ModelNet40 layout: expected ModelNet40/<class>/{split}/*.off or "
                f"modelnet40_ply_hdf5_2048/ply_data_{split}*.h5 under it",
            )

    def _load_h5(self, files: list[Path], h5_root: Path) -> None:
        import h5py

        points, normals, labels, self._items = [], [], [], []
        for file in files:
            try:
                with h5py.File(file, "r") as handle:
                    data, label = np.asarray(handle["data"]), np.asarray(handle["label"]).reshape(-1)
                    normal = np.asarray(handle["normal"]) if "normal" in handle else None
            except (OSError, KeyError) as error:
                raise FrameError(str(file), f"not a ModelNet40 HDF5 file ({error})") from error
            if data.ndim != 3 or data.shape[2] != 3 or label.shape[0] != data.shape[0]:
                raise FrameError(str(file), f"data {list(data.shape)} and label {list(label.shape)} do not match")
            points.append(data)
            labels.append(label)
            normals.append(normal)
            self._items += [(file, index) for index in range(data.shape[0])]
        has_normals = all(normal is not None for normal in normals)
        self._arrays = (
            np.concatenate(points),
            np.concatenate(normals) if has_normals else None,
            np.concatenate(labels).astype(np.int64),
        )
        names = h5_root / "shape_names.txt"
        self.classes = names.read_text().split() if names.is_file() else []

    def __len__(self) -> int:
        return len(self._items)

    def where(self, index: int) -> str:
        path, position = self._items[index]
        return str(path) if self._arrays is None else f"{path}:{position}"

    def get(self, index: int) -> AtomsGraph:
        if self._arrays is not None:
            points, normals, labels = self._arrays
            return _cloud(points[index], None if normals is None else normals[index], int(labels[index]), self.dtype)
        path, label = self._items[index]
        vertices, faces = read_off(path)
        rng = np.random.default_rng(self.seed + index)
        points, normals = sample_surface(vertices, faces, self.num_points, rng)
        return _cloud(points, normals, label, self.dtype)


class PointCloudFileDataset(StructureDataset):
    """One point cloud per ``.ply`` or ``.npz`` file (fields in the module docstring).

    Raises:
        DatasetError: missing files (all listed). Items raise :class:`~zoo.datasets.FrameError` naming the file.
    """

    def __init__(
        self,
        paths: PathLike | list[PathLike],
        *,
        transform: Transform | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(transform)
        self.paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
        missing = [FrameError(str(path), "file not found") for path in self.paths if not path.is_file()]
        if missing:
            raise DatasetError(missing)
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, index: int) -> str:
        return str(self.paths[index])

    def get(self, index: int) -> AtomsGraph:
        path = self.paths[index]
        if path.suffix.lower() == ".ply":
            vertex = read_ply(path)
            if not {"x", "y", "z"} <= vertex.keys():
                raise GraphError(f"the vertices have no x, y, z (properties: {sorted(vertex)})")
            points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
            normals = np.stack([vertex[k] for k in ("nx", "ny", "nz")], axis=1) if "nx" in vertex else None
            return _cloud(points, normals, None, self.dtype)
        try:
            with np.load(path, allow_pickle=False) as archive:
                key = "points" if "points" in archive.files else "pos"
                if key not in archive.files:
                    raise GraphError(f"no 'points' or 'pos' array (keys: {archive.files})")
                points = archive[key]
                normals = archive["normals"] if "normals" in archive.files else None
                label = int(archive["label"].reshape(-1)[0]) if "label" in archive.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise GraphError(f"not a readable npz file ({error})") from error
        return _cloud(points, normals, label, self.dtype)
