"""Replay a submodule's training forward and backward as CUDA graphs."""
import torch
from mmengine.dist import is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from cmt_mm.registry import HOOKS


@HOOKS.register_module()
class CUDAGraphHook(Hook):
    """Capture the backbone's training forward and backward once, then replay them as CUDA
    graphs (``torch.cuda.make_graphed_callables``).

    Where a GPU waits for Python to launch a model's many small kernels (CMT-S on 64 x 64
    images launches thousands per step), a graph launches them all at once. The capture takes
    the first training batch's shape: every later batch must have it (the loader's
    ``drop_last=True``), and it is an error otherwise. Evaluation, and anything run with the
    module in eval mode, runs eagerly. Parameters, buffers and checkpoints are unchanged; the
    graphs read the parameters where the optimizer updates them in place. Random numbers
    inside the graphs (drop path) come from the same generator, seeded as before by
    ``cmt_mm.IterationSeedHook``, but are drawn in the graph's own order, so a graphed run does
    not repeat an eager one's drop-path masks.

    ``tools/train.py --cuda-graph`` adds it. It needs one CUDA device (not distributed
    training), no module hooks and no ``with_cp`` inside the module, and with ``--amp`` it
    captures under the optimizer wrapper's autocast. The capture itself (three warm-up steps
    and one recorded step on the first batch) does not change the run's random streams, but
    updates BatchNorm statistics four times more than an eager run.

    Args:
        module (str): Attribute name of the model's submodule to graph. Defaults to
            ``'backbone'``.
    """

    priority = 'VERY_LOW'

    def __init__(self, module: str = 'backbone') -> None:
        self.module = module
        self.input_shape = None

    def before_train(self, runner) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError('CUDAGraphHook needs a CUDA device; train without --cuda-graph '
                               'on the CPU')
        if is_distributed():
            raise RuntimeError('CUDAGraphHook graphs one process\'s module; it does not '
                               'support distributed training: train without --cuda-graph')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.input_shape is not None:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # the capture's augmentations and drop paths leave the run's generators as they were
        with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
            inputs = model.data_preprocessor(data_batch, True)['inputs']
            self._capture(runner, model, inputs)

    def _capture(self, runner, model, inputs: torch.Tensor) -> None:
        module = getattr(model, self.module, None)
        if module is None:
            raise ValueError(f'CUDAGraphHook: the model ({type(model).__name__}) has no '
                             f'{self.module!r} to graph')
        with runner.optim_wrapper.optim_context(model):
            # make_graphed_callables needs autocast's weight cache off while it captures
            amp = dict(enabled=torch.is_autocast_enabled('cuda'),
                       dtype=torch.get_autocast_dtype('cuda'), cache_enabled=False)
            with torch.autocast('cuda', **amp):
                torch.cuda.make_graphed_callables(module, (inputs, ))
        graphed_forward = module.forward

        def forward(x, *args, **kwargs):
            if module.training and tuple(x.shape) != self.input_shape:
                raise RuntimeError(
                    f'CUDAGraphHook: {self.module} was graphed for training inputs of shape '
                    f'{self.input_shape}, got {tuple(x.shape)}; every training batch needs '
                    "that shape (set the train_dataloader's drop_last=True)")
            return graphed_forward(x, *args, **kwargs)

        module.forward = forward
        self.input_shape = tuple(inputs.shape)
        runner.logger.info(f'CUDAGraphHook: {self.module} training forward and backward '
                           f'captured as CUDA graphs for inputs {self.input_shape} '
                           f'(autocast {amp["dtype"] if amp["enabled"] else "off"})')
