"""ASE plugin entry point (``[project.entry-points."ase.plugins"] zoo = "zoo.calculators.ase_plugin"``).

ASE's plugin system (``ase._4.plugins`` in ASE >= 3.25) reads ``__ase_plugins__`` from this module, so ASE lists
the ``zoo`` calculator among its calculators. An ASE without a plugin system simply never imports it.
"""

from __future__ import annotations

try:
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # an ASE without the plugin system: nothing to register
    __ase_plugins__: set = set()
else:
    __ase_plugins__ = {
        CalculatorPlugin(
            "zoo",
            citation="zoo: a model zoo of E(3)-equivariant graph networks",
            implementation="zoo.calculators.ase.ZooCalculator",
        )
    }
