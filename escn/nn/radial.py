r"""Radial embeddings, cutoff envelopes and the radial MLP.

These are the pieces that turn an edge length :math:`r_{ij}` into the per-edge
weights of a convolution (see the e3nn convolution guide):

- :func:`soft_one_hot_linspace` and :func:`soft_unit_step` reproduce
  ``e3nn.math.soft_one_hot_linspace`` / ``e3nn.math.soft_unit_step`` number for
  number, so code written for e3nn keeps its embeddings.
- :class:`BesselBasis` is the DimeNet / NequIP radial basis
  :math:`\sqrt{2/r_\text{max}}\,\sin(n\pi r/r_\text{max})/r`, finite (with
  finite gradient) at :math:`r = 0`.
- :class:`PolynomialCutoff` is the DimeNet smooth polynomial envelope, exactly
  zero beyond :math:`r_\text{max}` and :math:`C^2` there.
- :class:`RadialMLP` is a bias-free, variance-preserving fully connected net in
  the style of ``e3nn.nn.FullyConnectedNet``; :meth:`RadialMLP.from_e3nn` loads
  one and then reproduces its output exactly.

Only ``torch`` and the standard library are used at runtime.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, cast

import torch
from torch import Tensor

from escn._util import check_int as _check_int
from escn.nn.checks import check_float_input

__all__ = [
    "soft_unit_step",
    "soft_one_hot_linspace",
    "BesselBasis",
    "PolynomialCutoff",
    "RadialMLP",
    "second_moment_scale",
    "BASES",
]

#: Names accepted by :func:`soft_one_hot_linspace` for ``basis``.
BASES = ("gaussian", "cosine", "smooth_finite", "fourier", "bessel")

# exp(-1/x) is exactly 0 for every x <= 1e-3 in float64 (exp(-1000) underflows;
# the smallest positive double is ~exp(-744.4)), and a fortiori in float32 /
# bfloat16 / float16.  Masking below this threshold therefore changes no value,
# but keeps the autograd graph away from 1/x**2 overflowing (0 * inf = nan)
# for tiny positive x.
_SOFT_STEP_ZERO_BELOW = 1e-3

# Below this |u|, sin(u)/u is evaluated from its Taylor series.  The first
# omitted term is u**10/11! < 2.6e-18 for |u| < 0.1, below float64 round-off,
# and the series has clean derivatives of every order at u = 0.
_SINC_SERIES_BELOW = 0.1


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _check_float_tensor(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating-point tensor (float16/bfloat16/float32/float64), "
            f"got dtype {x.dtype}; convert it with e.g. {name}.double()"
        )


def _check_real(name: str, value: object) -> float:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _sin_u_over_u(u: Tensor) -> Tensor:
    r"""``sin(u) / u`` with the value 1 at ``u = 0`` and finite derivatives everywhere.

    Shape: any -> same.
    """
    small = u.abs() < _SINC_SERIES_BELOW
    # The direct branch never sees the small u (whose gradient would cancel
    # catastrophically or divide by zero); torch.where then routes a zero
    # gradient to the branch that is not selected.
    u_safe = torch.where(small, torch.ones_like(u), u)
    direct = torch.sin(u_safe) / u_safe
    u2 = u * u
    series = 1 - u2 / 6 * (1 - u2 / 20 * (1 - u2 / 42 * (1 - u2 / 72)))
    return torch.where(small, series, direct)


# --------------------------------------------------------------------------- #
# e3nn-compatible soft one-hot embeddings
# --------------------------------------------------------------------------- #
def soft_unit_step(x: Tensor) -> Tensor:
    r"""Smooth (:math:`C^\infty`) unit step :math:`\theta(x)\, e^{-1/x}`.

    Same values as ``e3nn.math.soft_unit_step``; written with plain autograd so
    that gradients of every order are available and finite (including for tiny
    positive ``x``, where e3nn's hand-written backward gives ``nan``).

    Args:
        x: tensor of shape ``(...)``, real floating point.

    Returns:
        Tensor of shape ``(...)``, same dtype and device as ``x``.
    """
    _check_float_tensor("x", x)
    mask = x > _SOFT_STEP_ZERO_BELOW
    safe_x = torch.where(mask, x, torch.ones_like(x))
    return torch.where(mask, torch.exp(-1.0 / safe_x), torch.zeros_like(x))


def _smooth_finite_scale() -> float:
    # e3nn multiplies by 1.14136 * torch.exp(torch.tensor(2.0)): e**2 evaluated
    # in the *default* dtype (float32 unless changed), not math.exp(2).  We
    # reproduce that rounding so that float64 embeddings agree to 1e-16 rather
    # than to ~1e-7.
    e2 = torch.exp(torch.tensor(2.0, dtype=torch.get_default_dtype()))
    return float((1.14136 * e2).item())


def soft_one_hot_linspace(
    x: Tensor,
    start: float,
    end: float,
    number: int,
    basis: str,
    cutoff: bool,
) -> Tensor:
    r"""Project ``x`` on ``number`` basis functions spread evenly over ``[start, end]``.

    Drop-in for ``e3nn.math.soft_one_hot_linspace`` (same values for every
    basis and both ``cutoff`` choices). With ``cutoff=False`` the centres are
    ``linspace(start, end, number)``; with ``cutoff=True`` they are the inner
    points of ``linspace(start, end, number + 2)``, so every function goes to
    zero at ``start`` and ``end``.

    Bases (``diff = (x - centre) / step``):

    - ``"gaussian"``: ``exp(-diff**2) / 1.12``
    - ``"cosine"``: ``cos(pi/2 * diff)`` on ``|diff| < 1``, else 0
    - ``"smooth_finite"``: ``1.14136 * e**2 * u(diff + 1) * u(1 - diff)`` with
      ``u = soft_unit_step``; :math:`C^\infty` and strictly zero for
      ``|diff| >= 1`` (hence beyond ``end`` when ``cutoff=True``).
    - ``"fourier"``: with ``t = (x - start) / (end - start)``,
      ``cos(pi i t) / sqrt(0.25 + number/2)``, ``i = 0..number-1`` (no cutoff) or
      ``sin(pi i t) / sqrt(0.25 + number/2)``, ``i = 1..number``, on ``0 < t < 1`` (cutoff).
    - ``"bessel"``: with ``s = x - start``, ``c = end - start``,
      ``sqrt(2/c) * sin(n pi s / c) / s``, ``n = 1..number`` (times ``[0 < s < c]``
      with cutoff). Not normalised.

    Differences from e3nn (only where e3nn fails):

    - ``"bessel"`` at ``x == start`` returns the limit ``sqrt(2/c) * n pi / c``
      (0 with ``cutoff=True``) instead of ``nan``, with a finite gradient.
    - ``number=1, cutoff=False`` with a step-based basis (gaussian, cosine,
      smooth_finite) has no spacing and raises ``ValueError`` (e3nn raises
      ``IndexError``); fourier and bessel accept it.

    Args:
        x: tensor of shape ``(...)``, real floating point.
        start: left end of the interval.
        end: right end of the interval, ``end > start``.
        number: number of basis functions ``N >= 1``.
        basis: one of ``"gaussian"``, ``"cosine"``, ``"smooth_finite"``,
            ``"fourier"``, ``"bessel"``.
        cutoff: if ``True`` every function vanishes outside ``(start, end)``
            (approximately so for ``"gaussian"``).

    Returns:
        Tensor of shape ``(..., N)``, dtype and device of ``x``; differentiable in ``x``.
    """
    _check_float_tensor("x", x)
    start = _check_real("start", start)
    end = _check_real("end", end)
    if not end > start:
        raise ValueError(f"end must be greater than start, got start={start}, end={end}")
    number = _check_int("number", number, 1)
    if not isinstance(basis, str) or basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    if not isinstance(cutoff, bool):
        raise TypeError(f"cutoff must be a bool (True or False), got {cutoff!r}")
    if number == 1 and not cutoff and basis in ("gaussian", "cosine", "smooth_finite"):
        raise ValueError(
            f"number must be >= 2 for basis={basis!r} with cutoff=False "
            "(the spacing between centres is undefined for a single centre), got number=1"
        )

    if basis == "fourier":
        t = (x[..., None] - start) / (end - start)
        if not cutoff:
            i = torch.arange(0, number, dtype=x.dtype, device=x.device)
            return torch.cos(math.pi * i * t) / math.sqrt(0.25 + number / 2)
        i = torch.arange(1, number + 1, dtype=x.dtype, device=x.device)
        inside = (0 < t) & (t < 1)
        return torch.sin(math.pi * i * t) / math.sqrt(0.25 + number / 2) * inside

    if basis == "bessel":
        s = x[..., None] - start
        c = end - start
        freq = torch.arange(1, number + 1, dtype=x.dtype, device=x.device) * math.pi
        out = math.sqrt(2 / c) * (freq / c) * _sin_u_over_u(freq * s / c)
        if not cutoff:
            return out
        inside = ((s / c) < 1) & (0 < s)
        return out * inside

    if cutoff:
        centres = torch.linspace(start, end, number + 2, dtype=x.dtype, device=x.device)
        step = centres[1] - centres[0]
        centres = centres[1:-1]
    else:
        centres = torch.linspace(start, end, number, dtype=x.dtype, device=x.device)
        step = centres[1] - centres[0]
    diff = (x[..., None] - centres) / step

    if basis == "gaussian":
        return diff.pow(2).neg().exp().div(1.12)
    if basis == "cosine":
        inside = (diff < 1) & (-1 < diff)
        return torch.cos(math.pi / 2 * diff) * inside
    # smooth_finite
    return _smooth_finite_scale() * soft_unit_step(diff + 1) * soft_unit_step(1 - diff)


# --------------------------------------------------------------------------- #
# Bessel basis and polynomial cutoff
# --------------------------------------------------------------------------- #
class BesselBasis(torch.nn.Module):
    r"""DimeNet / NequIP radial Bessel basis.

    .. math::

        e_n(r) = \sqrt{\frac{2}{r_\text{max}}}\; \frac{\sin(\omega_n r / r_\text{max})}{r},
        \qquad \omega_n = n\pi,\; n = 1 \dots N.

    At :math:`r = 0` it takes its limit :math:`\sqrt{2/r_\text{max}}\,\omega_n / r_\text{max}`
    (for :math:`\omega_n = n\pi`: :math:`n\pi\sqrt{2/r_\text{max}}/r_\text{max}`), and its
    derivative there is the limit 0; small :math:`r` uses the Taylor series of
    :math:`\sin u / u`, so gradients of every order are finite.

    Args:
        r_max: cutoff radius, ``> 0``.
        num_basis: number of functions ``N >= 1``.
        trainable: if ``True`` the frequencies are trainable (NequIP): the parameter
            ``n`` holds :math:`\omega_n / \pi`; otherwise ``n`` is a buffer. Either
            way it follows ``.to()``; :attr:`freqs` gives :math:`\omega_n`.

    Shapes:
        ``forward(r)``: ``r`` of shape ``(...)`` (typically ``(E,)``) -> ``(..., N)``.
    """

    n: Tensor

    def __init__(self, r_max: float, num_basis: int, trainable: bool = False) -> None:
        super().__init__()
        r_max = _check_real("r_max", r_max)
        if r_max <= 0:
            raise ValueError(f"r_max must be > 0, got {r_max}")
        self.r_max = r_max
        self.num_basis = _check_int("num_basis", num_basis, 1)
        if not isinstance(trainable, bool):
            raise TypeError(f"trainable must be a bool, got {trainable!r}")
        self.trainable = trainable
        # Store the integers n (exact in any float dtype) rather than n*pi: a
        # float32 n*pi cast to float64 by .double() would carry a 1e-7 error.
        n = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.n = torch.nn.Parameter(n)
        else:
            self.register_buffer("n", n)
        self.prefactor = math.sqrt(2.0 / r_max)

    @property
    def freqs(self) -> Tensor:
        r"""The frequencies :math:`\omega_n` (``n * pi`` at initialisation), shape ``(num_basis,)``."""
        return self.n * math.pi

    def forward(self, r: Tensor) -> Tensor:
        """Evaluate the basis. ``r``: ``(...)`` -> ``(..., num_basis)``."""
        check_float_input("BesselBasis", "r", r, self.n)
        freqs = self.n * math.pi
        u = freqs * r[..., None] / self.r_max
        return self.prefactor * (freqs / self.r_max) * _sin_u_over_u(u)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}, trainable={self.trainable}"


class PolynomialCutoff(torch.nn.Module):
    r"""DimeNet smooth polynomial envelope.

    With :math:`d = r / r_\text{max}`,

    .. math::

        u(d) = 1 - \frac{(p+1)(p+2)}{2} d^p + p(p+2) d^{p+1} - \frac{p(p+1)}{2} d^{p+2}

    for :math:`d < 1` and exactly 0 for :math:`d \ge 1`. :math:`u(1) = u'(1) = u''(1) = 0`,
    so the envelope and its first two derivatives are continuous at :math:`r_\text{max}`;
    gradients are finite (zero) beyond :math:`r_\text{max}`. Meant for :math:`r \ge 0`
    (for non-integer ``p`` negative ``r`` gives ``nan``).

    Args:
        r_max: cutoff radius, ``> 0``.
        p: polynomial order, ``>= 1`` (DimeNet / NequIP default 6).

    Shapes:
        ``forward(r)``: ``(...)`` -> ``(...)``.
    """

    def __init__(self, r_max: float, p: float = 6) -> None:
        super().__init__()
        r_max = _check_real("r_max", r_max)
        if r_max <= 0:
            raise ValueError(f"r_max must be > 0, got {r_max}")
        p = _check_real("p", p)
        if p < 1:
            raise ValueError(f"p must be >= 1, got {p}")
        self.r_max = r_max
        self.p = p

    def forward(self, r: Tensor) -> Tensor:
        """Evaluate the envelope. ``r``: ``(...)`` -> ``(...)``."""
        check_float_input("PolynomialCutoff", "r", r, None)
        p = self.p
        d = r / self.r_max
        inside = d < 1
        # Evaluate the polynomial only on d < 1 so that huge r cannot overflow
        # d**(p+2) into inf and poison the (masked) gradient with 0 * inf.
        d = torch.where(inside, d, torch.zeros_like(d))
        a = (p + 1.0) * (p + 2.0) / 2.0
        b = p * (p + 2.0)
        c = p * (p + 1.0) / 2.0
        poly = 1.0 - torch.pow(d, p) * (a - d * (b - c * d))
        return torch.where(inside, poly, torch.zeros_like(poly))

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


# --------------------------------------------------------------------------- #
# radial MLP
# --------------------------------------------------------------------------- #
def second_moment_scale(act: Callable[[Tensor], Tensor]) -> float:
    r"""Return :math:`c = \langle \phi(z)^2 \rangle^{-1/2}` for :math:`z \sim N(0, 1)`.

    So that :math:`c\,\phi` has unit second moment. Computed deterministically
    by composite Simpson quadrature of :math:`\phi(z)^2 e^{-z^2/2}/\sqrt{2\pi}`
    on :math:`[-16, 16]` with step :math:`10^{-4}` in float64 (error below
    ~1e-8 for the usual activations). e3nn's ``normalize2mom`` instead uses a
    Monte Carlo estimate with :math:`10^6` samples, which differs by ~1e-3.

    Args:
        act: elementwise function of a float64 tensor.
    """
    half_width, n_intervals = 16.0, 320_000  # even, so that z = 0 is a node
    z = torch.linspace(-half_width, half_width, n_intervals + 1, dtype=torch.float64)
    if isinstance(act, torch.nn.Module):
        # A module activation (e.g. PReLU) may hold float32 parameters: evaluate it
        # in their dtype / device and accumulate in float64.
        tensors = [t for t in list(act.parameters()) + list(act.buffers()) if t.is_floating_point()]
        if tensors:
            z_eval = z.to(dtype=tensors[0].dtype, device=tensors[0].device)
        else:
            z_eval = z
    else:
        z_eval = z
    h = 2 * half_width / n_intervals
    w = torch.ones_like(z)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    with torch.no_grad():
        f = act(z_eval)
        if not isinstance(f, Tensor) or f.shape != z.shape:
            raise ValueError("act must map a tensor elementwise to a tensor of the same shape")
        f = f.to(device=z.device)
        density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        moment = float((w * f.double().pow(2) * density).sum() * h / 3)
    if not math.isfinite(moment) or moment <= 0:
        raise ValueError(f"act has second moment {moment} under N(0, 1); cannot normalise it")
    return moment**-0.5


class RadialMLP(torch.nn.Module):
    r"""Bias-free, variance-preserving fully connected network (e3nn ``FullyConnectedNet`` style).

    For layer :math:`k` with weight :math:`W_k` of shape ``(h_in, h_out)``, entries
    initialised :math:`N(0, 1)` and rescaled in ``forward``:

    - hidden layers (and the last one if ``out_act``):
      :math:`x \mapsto c\,\phi\!\left(x W_k / \sqrt{h_\text{in} v_\text{in}}\right) \sqrt{v_\text{out}}`
    - last layer otherwise:
      :math:`x \mapsto x W_k / \sqrt{h_\text{in} v_\text{in} / v_\text{out}}`

    where :math:`c` normalises :math:`\phi` to unit second moment under :math:`N(0,1)`
    (:func:`second_moment_scale`), :math:`v_\text{in}` is ``variance_in`` for the first
    layer and 1 after, :math:`v_\text{out}` is ``variance_out`` for the last layer and
    1 before. Inputs with unit second moment thus give outputs with second moment
    about ``variance_out``.

    Same forward as ``e3nn.nn.FullyConnectedNet(dims, act, variance_in, variance_out,
    out_act)``; with the same RNG state the initial weights are also the same. The only
    difference is :math:`c`: e3nn estimates it by Monte Carlo, we integrate it (they
    differ by ~1e-3). :meth:`from_e3nn` copies e3nn's weights *and* its constant, after
    which outputs agree to round-off.

    Args:
        dims: ``[d_in, hidden..., d_out]``, at least two positive ints.
        act: elementwise activation (function or ``nn.Module``), or ``None`` for a
            linear net. Default SiLU (e3nn's default is ``None``).
        variance_in: second moment expected of the input.
        variance_out: second moment wanted for the output.
        out_act: apply the activation after the last layer too.
        act_scale: use this normalisation constant :math:`c` instead of computing it.

    Shapes:
        ``forward(x)``: ``(..., dims[0])`` -> ``(..., dims[-1])``.
    """

    def __init__(
        self,
        dims: Sequence[int],
        act: Optional[Callable[[Tensor], Tensor]] = torch.nn.functional.silu,
        variance_in: float = 1.0,
        variance_out: float = 1.0,
        out_act: bool = False,
        act_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
            raise TypeError(f"dims must be a list of ints, got {dims!r}")
        dims = list(dims)
        if len(dims) < 2:
            raise ValueError(f"dims must have at least 2 entries [d_in, ..., d_out], got {dims}")
        for i, d in enumerate(dims):
            _check_int(f"dims[{i}]", d, 1)
        if act is not None and not callable(act):
            raise TypeError(f"act must be callable or None, got {act!r}")
        variance_in = _check_real("variance_in", variance_in)
        variance_out = _check_real("variance_out", variance_out)
        if variance_in <= 0:
            raise ValueError(f"variance_in must be > 0, got {variance_in}")
        if variance_out <= 0:
            raise ValueError(f"variance_out must be > 0, got {variance_out}")
        if not isinstance(out_act, bool):
            raise TypeError(f"out_act must be a bool, got {out_act!r}")

        self.dims = dims
        self.act = act  # an nn.Module activation is registered as a submodule
        self.variance_in = variance_in
        self.variance_out = variance_out
        self.out_act = out_act
        uses_act = act is not None and (len(dims) > 2 or out_act)
        if act_scale is not None:
            act_scale = _check_real("act_scale", act_scale)
            if act_scale <= 0:
                raise ValueError(f"act_scale must be > 0, got {act_scale}")
        elif uses_act and act is not None:
            act_scale = second_moment_scale(act)
        else:
            act_scale = 1.0
        self.act_scale = float(act_scale)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(h_in, h_out)) for h_in, h_out in zip(dims, dims[1:])]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the net. ``x``: ``(..., dims[0])`` -> ``(..., dims[-1])``."""
        check_float_input("RadialMLP", "x", x, self.weights[0])
        if x.dim() == 0 or x.shape[-1] != self.dims[0]:
            raise ValueError(f"x must have shape (..., {self.dims[0]}) for dims={self.dims}, got {tuple(x.shape)}")
        n = len(self.weights)
        for k, w in enumerate(self.weights):
            last = k == n - 1
            var_in = self.variance_in if k == 0 else 1.0
            var_out = self.variance_out if last else 1.0
            h_in = w.shape[0]
            if self.act is not None and (not last or self.out_act):
                x = x @ (w / (h_in * var_in) ** 0.5)
                x = self.act(x) * self.act_scale
                x = x * var_out**0.5
            else:
                x = x @ (w / (h_in * var_in / var_out) ** 0.5)
        return x

    @classmethod
    def from_e3nn(cls, fc: torch.nn.Module) -> "RadialMLP":
        """Build a :class:`RadialMLP` equal to an ``e3nn.nn.FullyConnectedNet``.

        Reads ``fc.hs``, the layers ``fc[k]`` (weights ``fc[k].weight`` of shape
        ``(h_in, h_out)``, ``var_in``, ``var_out``, ``act``) and the activation's
        normalisation constant (``normalize2mom.cst``, or 1 when e3nn treats it as
        the identity). The weights are copied (not shared); the result has their
        dtype and device. e3nn itself is not imported.

        Args:
            fc: an ``e3nn.nn.FullyConnectedNet``.

        Returns:
            A :class:`RadialMLP` whose ``forward`` equals ``fc``'s to round-off.
        """
        if not hasattr(fc, "hs") or not isinstance(fc, torch.nn.Sequential):
            raise TypeError(f"fc must be an e3nn.nn.FullyConnectedNet, got {type(fc).__name__}")
        layers: list[Any] = list(fc)
        dims = list(cast(Any, fc).hs)
        if len(layers) != len(dims) - 1:
            raise ValueError(f"fc has {len(layers)} layers but hs={dims}")
        e3nn_act = next((layer.act for layer in layers if layer.act is not None), None)
        if e3nn_act is None:
            act, scale = None, 1.0
        elif hasattr(e3nn_act, "f") and hasattr(e3nn_act, "cst"):
            act = e3nn_act.f
            scale = 1.0 if getattr(e3nn_act, "_is_id", False) else float(e3nn_act.cst)
        else:
            act, scale = e3nn_act, 1.0
        weight0 = layers[0].weight
        mlp = cls(
            dims,
            act=act,
            variance_in=float(layers[0].var_in),
            variance_out=float(layers[-1].var_out),
            out_act=layers[-1].act is not None,
            act_scale=scale,
        )
        mlp = mlp.to(dtype=weight0.dtype, device=weight0.device)
        with torch.no_grad():
            for mine, layer in zip(mlp.weights, layers):
                if tuple(layer.weight.shape) != tuple(mine.shape):
                    raise ValueError(
                        f"fc layer weight has shape {tuple(layer.weight.shape)}, expected {tuple(mine.shape)}"
                    )
                mine.copy_(layer.weight)
        return mlp

    def extra_repr(self) -> str:
        act = self.act
        name = getattr(act, "__name__", type(act).__name__) if act is not None else None
        return f"dims={self.dims}, act={name}, act_scale={self.act_scale:.6g}, out_act={self.out_act}"
