"""Random data augmentations that depend on the run's seed, the epoch and the sample's place in
the epoch only, not on the dataloader's worker processes.

Each worker process draws its augmentations from its own generators, seeded once when it
starts, so they depend on which worker loaded which samples before, in this epoch or, with
persistent workers, in all earlier ones: a run resumed from a checkpoint starts new workers and
draws other augmentations than the run it continues. Seeding the generators before each
sample's pipeline from (seed, rank, epoch, position) removes the dependency. The epoch and
position are known in the main process, where the sampler runs, and not in persistent workers,
whose dataset is a copy made when they started; the sampler's indices carry them there.
"""
import random
from typing import Iterator, Tuple

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from torch.utils.data import DataLoader


class SeededIndex(int):
    """A dataset index that carries the entropy its sample's pipeline is seeded from.

    An int to everything else: batch samplers, ``BaseDataset.get_data_info``.
    """

    def __new__(cls, index: int, entropy: Tuple[int, ...]) -> 'SeededIndex':
        seeded = super().__new__(cls, index)
        seeded.entropy = entropy
        return seeded

    def __reduce__(self):  # sent to the worker processes by pickling
        return SeededIndex, (int(self), self.entropy)


class SeedingSampler:
    """Wrap a sampler to yield its indices as ``SeededIndex(index, (seed, rank, epoch, i))``,
    ``i`` the index's position in the epoch.

    Args:
        sampler: The sampler, whose other attributes (``dataset``, ``set_epoch``) stay
            reachable through this one.
        seed (int): The run's seed.
        rank (int): The process's rank: each rank draws other augmentations.
    """

    def __init__(self, sampler, seed: int, rank: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0  # set before each epoch (cmt_mm.IterationSeedHook)

    def __iter__(self) -> Iterator[SeededIndex]:
        for position, index in enumerate(self.sampler):
            yield SeededIndex(index, (self.seed, self.rank, self.epoch, position))

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str):
        if name == 'sampler':  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.sampler, name)


class SeedingPipeline:
    """Wrap a dataset's pipeline to seed Python's, NumPy's and torch's generators from the
    sample's ``SeededIndex`` first (``results['sample_idx']``, set by ``BaseDataset``).

    A sample loaded instead of one that failed (``BaseDataset`` draws its index with NumPy)
    carries a plain index: it continues the failed sample's random numbers, as reproducible.
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, results: dict):
        index = results.get('sample_idx')
        if isinstance(index, SeededIndex):
            seed = int(np.random.SeedSequence(index.entropy).generate_state(1)[0])
            random.seed(seed)
            np.random.seed(seed)
            # The CPU's generator only: pipelines run there, and torch.manual_seed, which seeds
            # every device's, takes 180 us.
            torch.default_generator.manual_seed(seed)
            results['sample_idx'] = int(index)
        return self.pipeline(results)

    def __getattr__(self, name: str):  # transforms
        if name == 'pipeline':  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.pipeline!r})'


def seed_every_sample(dataloader: DataLoader, seed: int, rank: int) -> SeedingSampler:
    """Make ``dataloader`` seed each sample's pipeline; set the epoch on the returned sampler.

    It must run before the dataloader's workers start (its first iteration): they copy the
    dataset. Raises ValueError where it cannot: the seeds reach the pipeline of an mmengine
    ``BaseDataset`` only, whose ``sample_idx`` is the index as sampled (dataset wrappers such as
    ``ConcatDataset`` pass their datasets other indices), through a batch sampler.
    """
    dataset, batch_sampler = dataloader.dataset, dataloader.batch_sampler
    if not isinstance(dataset, BaseDataset):
        raise ValueError(f"the dataloader's dataset, a {type(dataset).__name__}, is not an "
                         'mmengine BaseDataset')
    if batch_sampler is None or not hasattr(batch_sampler, 'sampler'):
        raise ValueError('the dataloader has no batch sampler with a sampler (batch_size=None?)')
    if not isinstance(dataset.pipeline, SeedingPipeline):
        dataset.pipeline = SeedingPipeline(dataset.pipeline)
    if not isinstance(batch_sampler.sampler, SeedingSampler):
        batch_sampler.sampler = SeedingSampler(batch_sampler.sampler, seed, rank)
    return batch_sampler.sampler
