"""Compile the model's heavy parts with ``torch.compile`` for training and testing."""
from typing import Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from cmt_mm.registry import HOOKS


@HOOKS.register_module()
class CompileHook(Hook):
    """Compile submodules of the model (by default its backbone and neck) in place.

    A CMT step launches thousands of small kernels (depthwise convolutions, BatchNorms, GELUs,
    layout changes), so at small inputs the GPU waits on Python; compiling fuses them. mmengine's
    own ``compile=True`` compiles the whole ``train_step``, optimizer included, which
    ``torch.compile`` fails to trace on recent torch; this hook compiles only modules. It uses
    ``nn.Module.compile``, so parameter names, checkpoints and DDP are unchanged. The heads stay
    eager: their losses and post-processing change shape with every batch.

    ``tools/train.py --compile`` and ``tools/test.py --compile`` add it, or in a config::

        custom_hooks = [dict(type='cmt_mm.CompileHook', mode='max-autotune')]

    Args:
        modules (Sequence[str]): Attribute names of the submodules to compile; names the model
            lacks (a classifier has no neck) are skipped.
        **compile_kwargs: Passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic``...).
    """

    priority = 'VERY_LOW'

    def __init__(self, modules: Sequence[str] = ('backbone', 'neck'), **compile_kwargs) -> None:
        if isinstance(modules, str):
            modules = (modules, )
        self.modules = tuple(modules)
        self.compile_kwargs = compile_kwargs

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = compile_submodules(model, self.modules, **self.compile_kwargs)
        if not names:
            raise ValueError(f'CompileHook: the model ({type(model).__name__}) has none of '
                             f'the modules {self.modules} to compile')
        runner.logger.info(f'torch.compile({", ".join(names)}) with {self.compile_kwargs}')


def compile_submodules(model, names: Sequence[str], **compile_kwargs) -> list:
    """``nn.Module.compile`` the submodules ``names`` of ``model`` that it has, in place
    (parameter names unchanged); returns the names compiled."""
    present = [name for name in names if getattr(model, name, None) is not None]
    for name in present:
        getattr(model, name).compile(**compile_kwargs)
    return present
