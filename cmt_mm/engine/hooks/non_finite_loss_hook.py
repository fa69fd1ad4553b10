"""Stop a diverged training run at once, with a message saying where and which losses."""
import math
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook

from cmt_mm.registry import HOOKS
from cmt_mm.utils.training_errors import TrainingDivergedError


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(value)


def _as_float(value) -> float:
    return float(value.mean()) if isinstance(value, torch.Tensor) else float(value)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`TrainingDivergedError` when the loss becomes NaN or infinite.

    Without it a diverged run goes on training NaN weights, and saving them, until someone
    looks at the log. The hook checks the loss terms the model returned (the keys with 'loss'
    in their name, as mmengine sums them) after each training iteration. It runs before every
    other hook of that iteration, so the EMA, the log and the checkpoints never see it: the
    latest checkpoint stays the last good one, and the error names it (resume from it with a
    lower learning rate or with gradient clipping).

    Under loss scaling (``AmpOptimWrapper``, i.e. ``--amp``) a non-finite loss gives non-finite
    gradients, which the scaler detects: it skips that optimizer step (the weights stay finite)
    and lowers the scale. An fp16 overflow on an unusual batch thus costs one step, and the run
    stops only after ``amp_patience`` consecutive non-finite losses. Without loss scaling the
    optimizer has already stepped on NaN gradients, and the first non-finite loss stops the run.

    In distributed training every process stops at the same iteration (the check is summed
    across processes), so none is left waiting for the others.

    Args:
        amp_patience (int): Consecutive non-finite losses tolerated when the optim wrapper
            scales the loss. Defaults to 3.
    """

    priority = 'VERY_HIGH'

    def __init__(self, amp_patience: int = 3) -> None:
        if amp_patience < 1:
            raise ValueError(f'amp_patience must be at least 1, got {amp_patience}')
        self.amp_patience = amp_patience
        self.consecutive = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict] = None) -> None:
        non_finite = {name: value for name, value in (outputs or {}).items()
                      if 'loss' in name and not _is_finite(value)}
        processes_with_non_finite = len(non_finite) > 0
        if is_distributed():
            flag = torch.tensor(float(processes_with_non_finite))
            all_reduce(flag)
            processes_with_non_finite = flag.item() > 0
        if not processes_with_non_finite:
            self.consecutive = 0
            return

        self.consecutive += 1
        scaled = getattr(runner.optim_wrapper, 'loss_scaler', None) is not None
        if scaled and self.consecutive < self.amp_patience:
            runner.logger.warning(
                f'Non-finite loss at iteration {runner.iter + 1} '
                f'({self.consecutive} of {self.amp_patience} allowed in a row under loss '
                f'scaling): {self._describe(non_finite)}; the loss scaler skipped the step.')
            return

        in_a_row = f' ({self.consecutive} iterations in a row)' if self.consecutive > 1 else ''
        message = (f'training diverged: the loss is not finite at iteration {runner.iter + 1} '
                   f'(epoch {runner.epoch + 1}){in_a_row}: {self._describe(non_finite)}')
        last_ckpt = runner.message_hub.get_info('last_ckpt')
        if last_ckpt:
            message += f'; the latest checkpoint, {last_ckpt}, was saved before'
        runner.logger.error(message)
        raise TrainingDivergedError(message)

    @staticmethod
    def _describe(non_finite: Dict) -> str:
        if not non_finite:
            return 'in another process'
        return ', '.join(f'{name}={_as_float(value)}' for name, value in non_finite.items())
