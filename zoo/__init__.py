"""zoo: a model zoo of E(3)-equivariant graph networks for atoms, molecules and point clouds.

>>> import zoo
>>> isinstance(zoo.list_models(), list)
True
"""

from zoo._version import __version__
from zoo.api import load
from zoo.calculators import calculator, predict
from zoo.checkpoint import from_pretrained, push_to_hub, save_pretrained
from zoo.registry import (
    add_cards,
    create_model,
    get_card,
    list_architectures,
    list_models,
    list_pretrained,
    register_model,
)

__all__ = [
    "__version__",
    "add_cards",
    "calculator",
    "create_model",
    "from_pretrained",
    "get_card",
    "list_architectures",
    "list_models",
    "list_pretrained",
    "load",
    "predict",
    "push_to_hub",
    "register_model",
    "save_pretrained",
]
