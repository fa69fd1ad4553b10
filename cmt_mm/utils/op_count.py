"""The ATen operators a piece of code dispatches, by name, views apart.

Where a GPU waits for the host to launch kernels (a quarter of a RetinaNet CMT-S training step on
an H100), that time follows the number of operators, not their FLOPs: each non-view operator
costs the host microseconds to dispatch and launches up to one kernel. The count hardly depends
on the device (CMT's CUDA-only paths, its Triton LayerNorm for large maps and its query groups,
change a few operators a block; its one weight cast per stage changes hundreds, and
``cmt_mm.models.backbones.weight_cast.cast_weights_once_on('cpu')`` runs it on a CPU too), so
it can be taken, compared and tracked on a CPU.
"""
from collections import Counter
from typing import Callable, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def is_view(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` only makes a new view of its input's storage (launches no kernel).

    ``_unsafe_view`` is one, though its schema does not say it aliases its input.
    """
    return op.is_view or op.overloadpacket is torch.ops.aten._unsafe_view


class OpCount(NamedTuple):
    ops: Counter  # operator name -> calls, views excluded
    views: int

    @property
    def total(self) -> int:
        return sum(self.ops.values())


class _Recorder(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if is_view(func):
            self.views += 1
        else:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(run: Callable[[], object]) -> OpCount:
    """The operators ``run()`` dispatches, its autograd backward included if it runs one."""
    with _Recorder() as recorder:
        run()
    return OpCount(recorder.ops, recorder.views)
