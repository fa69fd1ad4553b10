"""Random numbers that depend only on the position in training, so that a resumed run repeats
them."""
import logging
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from cmt_mm.datasets.sample_seeding import seed_every_sample
from cmt_mm.registry import HOOKS


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Seed the training process's random generators before every iteration, and the data
    pipeline's before every sample.

    mmengine seeds Python's, NumPy's and torch's generators once, when the runner starts, and
    does not store their states in checkpoints, so after ``--resume`` they restart from the
    seed. Seeded here from the run's seed and the iteration, the random numbers that the
    training process draws (drop path, dropout, RoI sampling, Mixup and CutMix) are those of
    the uninterrupted run. The seed is mmengine's ``runner.seed`` (stored in the checkpoints,
    per process when ``randomness.diff_rank_seed`` is set).

    The data augmentations run in the dataloader's worker processes, whose generators mmengine
    seeds once, when they start; persistent workers (``persistent_workers=True``, as in the
    shipped configs) carry them from epoch to epoch, which a resumed run's new workers never
    had. So, with ``seed_samples``, the hook also seeds the pipeline before each training
    sample, from the run's seed, the rank, the epoch and the sample's position in the rank's
    epoch, which the sampler's indices carry to the workers (cmt_mm/datasets/sample_seeding.py).
    The augmentations then depend neither on the workers, their number or persistence, nor
    (with ``num_workers=0``) on this process's generators, and a resumed run repeats them.

    That needs an epoch-based loop (an ``IterBasedTrainLoop`` starts its workers before this
    hook can act; it repeats their augmentations by reading all trained batches again) and an
    mmengine ``BaseDataset``. For other datasets a warning says so, and the augmentations repeat
    only with ``persistent_workers=False`` and, inside an epoch, a loop that reads again the
    batches trained before the checkpoint (``cmt_mm.ResumableEpochBasedTrainLoop``).

    Args:
        seed_samples (bool): Seed the pipeline before each training sample, see above.
            Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed_samples: bool = True) -> None:
        self.seed_samples = seed_samples
        self._sampler = None

    def before_train(self, runner) -> None:
        if not self.seed_samples or not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        try:
            self._sampler = seed_every_sample(runner.train_dataloader, runner.seed, get_rank())
        except ValueError as err:
            print_log(f'IterationSeedHook cannot seed each training sample ({err}), so the '
                      'data augmentations depend on the dataloader workers: for a resumed run '
                      'to repeat them, set persistent_workers=False in train_dataloader of '
                      f"{runner.cfg.filename or 'the config'}", logger='current',
                      level=logging.WARNING)

    def before_train_epoch(self, runner) -> None:
        if self._sampler is not None:
            self._sampler.epoch = runner.epoch

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed = int(np.random.SeedSequence([runner.seed, runner.iter]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # all devices
