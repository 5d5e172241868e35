"""Layers: radial bases and cutoffs, the gate activation, the TFN reference convolution and the eSCN SO(2) convolution."""

from escn.nn.gate import Gate
from escn.nn.radial import BesselBasis, PolynomialCutoff, RadialMLP, soft_one_hot_linspace, soft_unit_step
from escn.nn.so2_conv import SO2Conv
from escn.nn.tfn_conv import TFNConv, tfn_paths

__all__ = [
    "BesselBasis",
    "Gate",
    "PolynomialCutoff",
    "RadialMLP",
    "SO2Conv",
    "TFNConv",
    "soft_one_hot_linspace",
    "soft_unit_step",
    "tfn_paths",
]
