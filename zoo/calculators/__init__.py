"""Calculators: the ASE calculator for zoo potentials (:func:`zoo.calculator`)."""

from zoo.calculators.ase import ModelTaskError, ZooCalculator, calculator

__all__ = ["ModelTaskError", "ZooCalculator", "calculator"]
