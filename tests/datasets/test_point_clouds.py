"""Point clouds: ModelNet40 OFF and HDF5 layouts, PLY (ASCII and binary), npz with normals; corrupt files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.datasets.base import FrameError
from zoo.datasets.point_clouds import ModelNet40, PointCloudFileDataset, read_off
from zoo.graph import GraphError

CUBE_VERTICES = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
CUBE_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def write_off(path: Path, scale: float = 1.0, modelnet_quirk: bool = False) -> None:
    head = f"OFF{len(CUBE_VERTICES)} {len(CUBE_QUADS)} 0" if modelnet_quirk else f"OFF\n{len(CUBE_VERTICES)} 6 0"
    lines = [head] + [" ".join(f"{v * scale:g}" for v in vertex) for vertex in CUBE_VERTICES]
    lines += ["4 " + " ".join(map(str, quad)) for quad in CUBE_QUADS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_modelnet_off_layout(tmp_path: Path) -> None:
    for name, scale in (("airplane", 1.0), ("bed", 2.0)):
        for split in ("train", "test"):
            for k in range(2):
                write_off(tmp_path / "ModelNet40" / name / split / f"{name}_{k:04d}.off", scale, modelnet_quirk=k == 1)
    dataset = ModelNet40(tmp_path, split="train", num_points=256)
    assert dataset.classes == ["airplane", "bed"] and len(dataset) == 4
    cloud = dataset[2]
    assert cloud.pos.shape == (256, 3) and cloud.x.shape == (256, 3) and cloud.y.tolist() == [1]
    assert float(cloud.pos.min()) >= 0 and float(cloud.pos.max()) <= 2.0
    on_face = torch.isclose(cloud.pos, torch.zeros(())) | torch.isclose(cloud.pos, torch.full((), 2.0))
    assert bool(on_face.any(dim=1).all()), "points are on the cube's surface"
    assert torch.allclose(cloud.x.norm(dim=1), torch.ones(256))
    assert torch.equal(dataset[2].pos, cloud.pos), "sampling is seeded per shape"
    assert "z" not in cloud


def test_modelnet_hdf5_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "modelnet40_ply_hdf5_2048"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 64, 3)).astype(np.float32)
    normal = rng.normal(size=(3, 64, 3)).astype(np.float32)
    with h5py.File(folder / "ply_data_test0.h5", "w") as handle:
        handle["data"], handle["label"], handle["normal"] = data, np.array([[4], [0], [39]], np.uint8), normal
    (folder / "shape_names.txt").write_text("\n".join(f"class{k}" for k in range(40)) + "\n")
    dataset = ModelNet40(tmp_path, split="test")
    assert len(dataset) == 3 and len(dataset.classes) == 40
    assert torch.equal(dataset[1].pos, torch.from_numpy(data[1])) and torch.equal(
        dataset[1].x, torch.from_numpy(normal[1])
    )
    assert dataset[2].y.tolist() == [39] and dataset.where(2).endswith("ply_data_test0.h5:2")
    with pytest.raises(FrameError, match="no ModelNet40 layout"):
        ModelNet40(tmp_path, split="train")


def write_ply(path: Path, points: np.ndarray, normals: np.ndarray, binary: bool) -> None:
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", f"element vertex {len(points)}"]
    header += [f"property float {name}" for name in ("x", "y", "z", "nx", "ny", "nz")]
    header += ["element face 0", "property list uchar int vertex_indices", "end_header"]
    table = np.concatenate([points, normals], axis=1).astype(np.float32)
    if binary:
        path.write_bytes(("\n".join(header) + "\n").encode() + table.astype("<f4").tobytes())
    else:
        path.write_text("\n".join(header + [" ".join(f"{v!r}" for v in row.tolist()) for row in table]) + "\n")


@pytest.mark.parametrize("binary", [False, True])
def test_ply_and_npz_round_trip(tmp_path: Path, binary: bool) -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    normals = rng.normal(size=(50, 3)).astype(np.float32)
    ply, npz = tmp_path / "cloud.ply", tmp_path / "cloud.npz"
    write_ply(ply, points, normals, binary)
    np.savez(npz, points=points, normals=normals, label=np.array(7))
    dataset = PointCloudFileDataset([ply, npz])
    for cloud in dataset:
        assert torch.equal(cloud.pos, torch.from_numpy(points)) and torch.equal(cloud.x, torch.from_numpy(normals))
    assert dataset[1].y.tolist() == [7]


def test_corrupt_point_clouds(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ply = tmp_path / "cut.ply"
    write_ply(ply, rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), binary=True)
    ply.write_bytes(ply.read_bytes()[:-30])
    off = tmp_path / "cut.off"
    write_off(off)
    off.write_text(off.read_text()[:-12])
    npz = tmp_path / "bad.npz"
    np.savez(npz, points=rng.normal(size=(5, 3)), normals=rng.normal(size=(4, 3)))
    dataset = PointCloudFileDataset([ply, npz])
    with pytest.raises(FrameError, match=rf"{ply}: the PLY file is truncated"):
        dataset[0]
    with pytest.raises(FrameError, match=rf"{npz}: normals have shape \[4, 3\], points \[5, 3\]"):
        dataset[1]
    with pytest.raises(GraphError, match="truncated or malformed"):
        read_off(off)
