"""Random numbers that depend only on the iteration, so that a resumed run repeats them."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from cmt_mm.registry import HOOKS


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Seed the training process's random generators before every iteration.

    mmengine seeds Python's, NumPy's and torch's generators once, when the runner starts, and
    does not store their states in checkpoints, so after ``--resume`` they restart from the
    seed. Seeded here from the run's seed and the iteration, the random numbers that the
    training process draws (drop path, dropout, RoI sampling, Mixup and CutMix) are those of
    the uninterrupted run. The seed is mmengine's ``runner.seed`` (stored in the checkpoints,
    per process when ``randomness.diff_rank_seed`` is set).

    The data augmentations run in the dataloader's worker processes, which mmengine seeds when
    they start. They repeat the uninterrupted run's when the resumed loop reads again (without
    training on them) the batches of its epoch that were trained before the checkpoint
    (mmengine's ``IterBasedTrainLoop`` and ``cmt_mm.ResumableEpochBasedTrainLoop`` do) and the
    workers start with each epoch (``persistent_workers=False``; persistent workers carry
    their generators over from earlier epochs, which a resumed run never had). With
    ``num_workers=0`` the pipelines draw from this process's generators, and the batches read
    between a checkpoint and the next iteration differ after a resume.
    """

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed = int(np.random.SeedSequence([runner.seed, runner.iter]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # all devices
