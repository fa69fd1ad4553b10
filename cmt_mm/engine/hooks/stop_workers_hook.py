"""Stop the dataloaders' persistent worker processes when a run ends."""
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop

from cmt_mm.registry import HOOKS


@HOOKS.register_module()
class StopPersistentWorkersHook(Hook):
    """Shut down the workers of the train, val and test dataloaders after ``train()``,
    ``val()`` or ``test()``.

    With ``persistent_workers=True`` (the shipped configs) PyTorch keeps the workers until the
    dataloader's iterator is garbage-collected, which for mmengine's loops is at interpreter
    exit. With ``pin_memory=True`` too, that exit path can wait out a 5 s join timeout per
    worker (pytorch/pytorch#81794): on the H100, ``tools/train.py`` on CIFAR-10 (12 workers
    for training, 12 for validation) took about 2 minutes to exit after its last evaluation.
    Shut down here, while the process is healthy, the workers exit at once. A later ``val()``
    or ``test()`` of the same runner starts new ones.
    """

    priority = 'LOWEST'

    def after_run(self, runner) -> None:
        # The private attributes hold the loops only once built; None or a config dict before.
        for loop in (runner._train_loop, runner._val_loop, runner._test_loop):
            if isinstance(loop, BaseLoop):
                stop_workers(loop.dataloader)


def stop_workers(dataloader) -> None:
    """End ``dataloader``'s worker processes, if it has any running."""
    iterator = getattr(dataloader, '_iterator', None)  # only set with persistent workers
    if iterator is not None and hasattr(iterator, '_shutdown_workers'):
        iterator._shutdown_workers()
        dataloader._iterator = None  # a new iteration starts new workers
