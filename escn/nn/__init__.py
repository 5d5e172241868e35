"""Layers: radial bases and cutoffs, the gate and S2-grid activations, an equivariant linear map, the TFN reference convolution and the eSCN SO(2) convolution."""

from escn.nn.gate import Gate
from escn.nn.linear import Linear
from escn.nn.radial import BesselBasis, PolynomialCutoff, RadialMLP, soft_one_hot_linspace, soft_unit_step
from escn.nn.s2_activation import S2Activation, S2Grid
from escn.nn.so2_conv import SO2Conv
from escn.nn.tfn_conv import TFNConv, tfn_paths

__all__ = [
    "BesselBasis",
    "Gate",
    "Linear",
    "PolynomialCutoff",
    "RadialMLP",
    "S2Activation",
    "S2Grid",
    "SO2Conv",
    "TFNConv",
    "soft_one_hot_linspace",
    "soft_unit_step",
    "tfn_paths",
]
