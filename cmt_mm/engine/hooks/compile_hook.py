"""Compile the model's heavy parts with ``torch.compile`` for training and testing."""
from typing import List, Sequence

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from cmt_mm.registry import HOOKS

# Regional compilation keeps a graph per block shape and mode (training, inference): CMT's four
# stages alone make 8, dynamo's default limit per function, past which it runs eager.
REGIONAL_RECOMPILE_LIMIT = 64


@HOOKS.register_module()
class CompileHook(Hook):
    """Compile submodules of the model (by default its backbone and neck) in place.

    A CMT step launches thousands of small kernels (depthwise convolutions, BatchNorms, GELUs,
    layout changes), so at small inputs the GPU waits on Python; compiling fuses them. mmengine's
    own ``compile=True`` compiles the whole ``train_step``, optimizer included, which
    ``torch.compile`` fails to trace on recent torch; this hook compiles only modules. It uses
    ``nn.Module.compile``, so parameter names, checkpoints and DDP are unchanged. The heads stay
    eager: their losses and post-processing change shape with every batch.

    Each input size is compiled statically (``dynamic=False`` unless given). With dynamic
    shapes, torch's choice from a second input size on, Inductor (torch 2.14) fails on the
    channels_last maps CMT saves for the backward (pytorch/pytorch#185510). Detection's changing
    image sizes therefore compile one by one, up to ``torch._dynamo``'s recompile limit, past
    which new sizes run eagerly.

    ``tools/train.py --compile`` and ``tools/test.py --compile`` add it, with the config's
    ``compile_options`` if it has them (the classification runtime asks for ``regional``), or
    in a config::

        custom_hooks = [dict(type='cmt_mm.CompileHook', mode='max-autotune')]

    Args:
        modules (Sequence[str]): Attribute names of the submodules to compile; names the model
            lacks (a classifier has no neck) are skipped.
        regional (bool): Compile the repeated blocks inside each module (the elements of its
            innermost ``nn.ModuleList``s: CMT's blocks) one by one, not the module whole.
            Blocks of one shape share a graph, so compiling takes a third of the time (the
            CIFAR-10 CMT-S training step on an H100: 44 s instead of 155 s); the few layers
            between blocks (stem, patch embeddings) stay eager. Defaults to False.
        **compile_kwargs: Passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``...).
    """

    priority = 'VERY_LOW'

    def __init__(self, modules: Sequence[str] = ('backbone', 'neck'), regional: bool = False,
                 **compile_kwargs) -> None:
        if isinstance(modules, str):
            modules = (modules, )
        self.modules = tuple(modules)
        self.regional = regional
        compile_kwargs.setdefault('dynamic', False)
        self.compile_kwargs = compile_kwargs

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = compile_submodules(model, self.modules, self.regional, **self.compile_kwargs)
        if not names:
            raise ValueError(f'CompileHook: the model ({type(model).__name__}) has none of '
                             f'the modules {self.modules} to compile')
        how = 'block by block' if self.regional else 'whole'
        runner.logger.info(f'torch.compile({", ".join(names)}), {how}, with '
                           f'{self.compile_kwargs}')


def compile_submodules(model: nn.Module, names: Sequence[str], regional: bool = False,
                       **compile_kwargs) -> List[str]:
    """``nn.Module.compile`` the submodules ``names`` of ``model`` that it has, in place
    (parameter names unchanged), whole or block by block; returns the names compiled."""
    present = [name for name in names if getattr(model, name, None) is not None]
    if regional:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                   REGIONAL_RECOMPILE_LIMIT)
    for name in present:
        module = getattr(model, name)
        for part in repeated_blocks(module) if regional else [module]:
            part.compile(**compile_kwargs)
    return present


def repeated_blocks(module: nn.Module) -> List[nn.Module]:
    """The elements of the innermost ``nn.ModuleList``s in ``module``, or ``[module]`` when it
    has none (a neck without repeated layers is compiled whole)."""
    innermost = [
        child for child in module.modules() if isinstance(child, nn.ModuleList) and not any(
            isinstance(inner, nn.ModuleList) for inner in child.modules() if inner is not child)
    ]
    return [block for blocks in innermost for block in blocks] or [module]
