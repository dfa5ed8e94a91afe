"""The examples in the docstrings of zoo.geometry run and print what they show."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from zoo.geometry import edge_frame, envelope, frames, radial, spherical


@pytest.mark.parametrize("module", [spherical, edge_frame, radial, envelope, frames], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
