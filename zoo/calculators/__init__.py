"""Using potentials: the ASE calculator (:func:`zoo.calculator`) and batch inference (:func:`zoo.predict`)."""

from zoo.calculators.ase import ModelTaskError, ZooCalculator, calculator
from zoo.calculators.predict import predict

__all__ = ["ModelTaskError", "ZooCalculator", "calculator", "predict"]
