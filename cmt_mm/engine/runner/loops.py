"""A training loop that resumes from checkpoints saved inside an epoch."""
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from cmt_mm.registry import LOOPS


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that resumes correctly inside an epoch.

    With iteration checkpoints (``CheckpointHook(by_epoch=False, interval=N)``) a killed run
    loses at most N iterations, but mmengine's epoch loop resumes such a checkpoint badly: it
    restores the iteration count and then starts the epoch over, training again on the batches
    trained before the checkpoint, and ends late. This loop skips them: it reads them without
    training, as mmengine's ``IterBasedTrainLoop`` does, so that the workers' random
    augmentations continue as in the uninterrupted run. It needs every epoch to have
    ``len(dataloader)`` iterations, as mmengine's ``max_iters`` does.

    Example::

        train_cfg = dict(type='cmt_mm.ResumableEpochBasedTrainLoop', max_epochs=12)
        default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2000))
    """

    _batches_to_skip = 0

    def run_epoch(self) -> None:
        self._batches_to_skip = max(0, self._iter - self._epoch * len(self.dataloader))
        if self._batches_to_skip:
            print_log(f'Resuming inside epoch {self._epoch + 1}: its first '
                      f'{self._batches_to_skip} batches were trained before the checkpoint; '
                      'reading them again without training', logger='current')
        super().run_epoch()

    def run_iter(self, idx, data_batch) -> None:
        if self._batches_to_skip > 0:
            self._batches_to_skip -= 1
            return
        super().run_iter(idx, data_batch)
