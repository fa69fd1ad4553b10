"""Autocast's casts of a module's convolution and linear weights, as one operator.

Under autocast every convolution and linear layer casts its weight and bias to the low
precision where it uses them, and the backward casts their gradients back: four operators per
layer, each a kernel launch on a GPU. CMT-S has 9 such layers in each of its 25 blocks; in a
RetinaNet training step their casts are about 900 of the backbone's 3,500 operators, and such a
step waits on launching. Concatenated, the parameters are cast with one operator each way.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Type

import torch
import torch.nn as nn


def _memory_order(t: torch.Tensor) -> List[int]:
    """``t``'s dims from the outermost in memory to the innermost.

    A dim of size 1 goes inside the others of its stride, which is where ``contiguous()`` and
    ``channels_last`` put it: a view made in this order then has ``t``'s strides exactly, and
    layers pick their output layout by their weight's strides.
    """
    return sorted(range(t.dim()), key=lambda d: (-t.stride(d), t.shape[d] == 1))


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements in memory order: a view for a dense tensor (channels_last too)."""
    return t.permute(_memory_order(t)).reshape(-1)


def _like(flat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_flat`: a view of ``flat`` with ``t``'s shape and layout."""
    order = _memory_order(t)
    inverse = sorted(range(t.dim()), key=order.__getitem__)
    return flat.view([t.shape[d] for d in order]).permute(inverse)


def cast_together(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> List[torch.Tensor]:
    """``tensors`` in ``dtype``, as views (of the same strides) of one cast of their
    concatenation.

    Differentiable: the backward splits the gradient with one operator (a single ``split``,
    not one view per tensor, whose backward would each allocate the whole buffer) and casts it
    back with one more.
    """
    flat = torch.cat([_flat(t) for t in tensors]).to(dtype)
    pieces = flat.split([t.numel() for t in tensors])
    return [_like(piece, t) for piece, t in zip(pieces, tensors)]


class CastWeightsOnce:
    """Runs a module with its convolution and linear parameters cast once, under autocast.

    Only on the devices of :attr:`device_types` (CUDA), where launches are what it saves: on
    a CPU the concatenation costs more than the casts it replaces. Outside autocast, in float32
    autocast and while ``torch.compile`` traces the module whole (Inductor fuses the casts) the
    module runs as it is. The values are those autocast would cast, so outputs and gradients
    are the same.

    During the call each layer's cast weights shadow its parameters as instance attributes
    (``self.weight`` finds them before ``nn.Module`` looks among the parameters), so
    ``parameters()``, hooks and optimizers see nothing change. The parameters are read at every
    call (loading, ``.to()`` and BatchNorm folding replace them); a layer replaced after
    construction runs with autocast's own casts.

    Args:
        module (nn.Module): the module to run.
        casts (dict): the layers whose parameters are cast, by exact type, each with the names
            of its parameters to cast (None: all). Only parameters that a layer hands to its
            convolution or matmul unchanged: one it computes with first (a kernel with a
            folded shortcut) must get the float32 values, as autocast gives it.
    """

    device_types = ('cuda', )

    def __init__(self, module: nn.Module,
                 casts: Dict[Type[nn.Module], Optional[Sequence[str]]]):
        self.module = module
        self.parameters = [(layer, name) for layer in module.modules() if type(layer) in casts
                           for name, _ in layer.named_parameters(recurse=False)
                           if casts[type(layer)] is None or name in casts[type(layer)]]

    def __call__(self, *args):
        device_type = args[0].device.type
        if (device_type not in self.device_types or not torch.is_autocast_enabled(device_type)
                or torch.get_autocast_dtype(device_type) == torch.float32
                or torch.compiler.is_compiling() or not self.parameters):
            return self.module(*args)
        params = [layer._parameters[name] for layer, name in self.parameters]
        casts = cast_together(params, torch.get_autocast_dtype(device_type))
        for (layer, name), cast in zip(self.parameters, casts):
            layer.__dict__[name] = cast
        try:
            return self.module(*args)
        finally:
            for layer, name in self.parameters:
                del layer.__dict__[name]


@contextlib.contextmanager
def cast_weights_once_on(device_type: str) -> Iterator[None]:
    """Let :class:`CastWeightsOnce` run on ``device_type`` too (``'cpu'``: to count or test
    what a GPU run dispatches)."""
    saved = CastWeightsOnce.device_types
    CastWeightsOnce.device_types = (*saved, device_type)
    try:
        yield
    finally:
        CastWeightsOnce.device_types = saved
