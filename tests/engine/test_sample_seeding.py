"""The training data augmentations depend on the seed, the epoch and the sample's position only
(cmt_mm/datasets/sample_seeding.py, installed by cmt_mm.IterationSeedHook): a run that starts
at a later epoch with new (persistent) workers, or with none, gets the same samples.

Dataloaders as mmengine's Runner builds them, on a small image folder with random crops and
flips and one truncated file, which the loader skips and BaseDataset replaces by a random other
sample.
"""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image

from cmt_mm.datasets.sample_seeding import SeededIndex, seed_every_sample

PIPELINE = [
    dict(type='cmt_mm.SafeLoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=16, crop_ratio_range=(0.2, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('seeding')
    rng = np.random.default_rng(0)
    for label in ('a', 'b'):
        (root / label).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f'{i}.png')
    (root / 'a' / 'truncated.jpg').write_bytes(b'\xff\xd8\xff\xe0' + bytes(100))
    return str(root)


def build_loader(root, num_workers):
    init_default_scope('mmpretrain')
    return Runner.build_dataloader(
        dict(batch_size=4, num_workers=num_workers, persistent_workers=num_workers > 0,
             dataset=dict(type='CustomDataset', data_root=root, pipeline=PIPELINE),
             sampler=dict(type='DefaultSampler', shuffle=True)),
        seed=0)


def read_epochs(loader, epochs, seeded=True) -> dict:
    """epoch -> [(dataset index, image)], the epochs read one after the other, as mmengine's
    hooks set their epoch (DistSamplerSeedHook, IterationSeedHook)."""
    sampler = seed_every_sample(loader, seed=0, rank=0) if seeded else None
    read = {}
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        if seeded:
            sampler.epoch = epoch
        read[epoch] = [(data_sample.sample_idx, image) for batch in loader
                       for image, data_sample in zip(batch['inputs'], batch['data_samples'])]
    return read


def assert_same(expected: list, got: list):
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(expected, got))


def test_later_start_and_other_workers_read_the_same_samples(image_folder):
    loader = build_loader(image_folder, num_workers=2)
    reference = read_epochs(loader, range(3))
    resumed = read_epochs(build_loader(image_folder, num_workers=2), [1, 2])
    in_process = read_epochs(build_loader(image_folder, num_workers=0), [2])
    for epoch in (1, 2):
        assert_same(reference[epoch], resumed[epoch])
    assert_same(reference[2], in_process[2])
    # The truncated file was replaced by another sample; the pipeline saw plain indices.
    dataset = loader.dataset
    truncated = next(i for i in range(len(dataset))
                     if dataset.get_data_info(i)['img_path'].endswith('truncated.jpg'))
    indices = [i for i, _ in reference[1]]
    assert len(indices) == len(dataset) and truncated not in indices
    assert all(type(i) is int for i in indices)
    # Each epoch draws its own augmentations.
    first, second = (dict(reference[epoch]) for epoch in (1, 2))
    assert not all(torch.equal(first[i], second[i]) for i in first.keys() & second.keys())


def test_without_seeding_persistent_workers_draw_other_samples(image_folder):
    """What the seeding changes: new workers start where the first epoch's had begun."""
    reference = read_epochs(build_loader(image_folder, num_workers=2), range(2), seeded=False)
    resumed = read_epochs(build_loader(image_folder, num_workers=2), [1], seeded=False)
    assert not all(torch.equal(a, b) for (_, a), (_, b) in zip(reference[1], resumed[1]))


def test_seeded_index_is_an_int_that_survives_pickling():
    import pickle
    index = pickle.loads(pickle.dumps(SeededIndex(7, (0, 0, 3, 5))))
    assert index == 7 and index.entropy == (0, 0, 3, 5) and isinstance(index, int)
    assert np.arange(10)[index] == 7


def test_dataset_wrappers_are_refused(image_folder):
    """ConcatDataset passes its datasets other indices than the sampled ones, without seeds."""
    init_default_scope('mmpretrain')
    loader = Runner.build_dataloader(
        dict(batch_size=4, dataset=dict(type='ConcatDataset', datasets=[
            dict(type='CustomDataset', data_root=image_folder, pipeline=PIPELINE)] * 2),
            sampler=dict(type='DefaultSampler', shuffle=True)), seed=0)
    with pytest.raises(ValueError, match='a ConcatDataset, is not an mmengine BaseDataset'):
        seed_every_sample(loader, seed=0, rank=0)
