"""Constants the models use in every forward pass are put on the device once, not copied from host memory on each
call (on a GPU such a copy waits for the device's queue: a host-device sync per forward)."""

from __future__ import annotations

import torch

from zoo.geometry.spherical import _half_turn_wigner, _half_turn_wigner_on, wigner_D
from zoo.nn.so3 import CoefficientLayout, EdgeRotation


def test_coefficient_layout_on_device_is_made_once():
    layout = CoefficientLayout(4, 2)
    reduced, rescale = layout.on(torch.device("cpu"), torch.float32)
    again = layout.on(torch.device("cpu"), torch.float32)
    assert again[0] is reduced and again[1] is rescale
    assert torch.equal(reduced, layout.reduced) and rescale.dtype == torch.float32
    torch.testing.assert_close(rescale, layout.rescale.float())
    wigner = torch.randn(5, 25, 25, dtype=torch.float64)
    rotation = EdgeRotation.from_wigner(wigner, layout)
    torch.testing.assert_close(rotation.wigner_out, wigner.transpose(1, 2)[:, :, layout.reduced] * layout.rescale)
    torch.testing.assert_close(rotation.wigner_in, wigner[:, layout.reduced, :])


def test_half_turn_on_device_is_made_once_and_unchanged_by_use():
    first = _half_turn_wigner_on(3, torch.float64, torch.device("cpu"))
    assert _half_turn_wigner_on(3, torch.float64, torch.device("cpu")) is first
    angles = torch.rand(3, 4, dtype=torch.float64)
    wigner_D(3, *angles)
    assert torch.equal(first, _half_turn_wigner(3))
