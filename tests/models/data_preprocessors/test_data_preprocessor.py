"""BatchAugmentClsDataPreprocessor: the batch arrives in RGB at [0, 255] to the transforms, the
training transforms run only in training, the shared ones always, normalisation and labels are
ClsDataPreprocessor's, and a loader that does not stack its images is an actionable error."""
import pytest
import torch
from mmpretrain.models import ClsDataPreprocessor
from mmpretrain.structures import DataSample

from cmt_mm.registry import MODELS

MEAN, STD = [125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]


class Record:
    """A batch transform that records what it sees and adds 1."""

    def __init__(self):
        self.seen = []

    def __call__(self, images):
        self.seen.append(images.clone())
        return images + 1


def batch(n=4):
    bgr = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    bgr[:, 2] = 255  # red, in the BGR order that image loaders decode to
    return dict(inputs=bgr, data_samples=[DataSample().set_gt_label(i % 3) for i in range(n)])


def build(**kwargs):
    return MODELS.build(dict(type='cmt_mm.BatchAugmentClsDataPreprocessor', mean=MEAN, std=STD,
                             to_rgb=True, num_classes=3, **kwargs))


def test_transforms_see_rgb_values_and_run_in_their_phases():
    train_only, always = Record(), Record()
    preprocessor = build(train_transforms=[train_only], transforms=[always])
    out = preprocessor(batch(), training=True)
    (seen, ) = train_only.seen
    assert seen.dtype == torch.float32 and seen[:, 0].eq(255).all() and seen[:, 2].eq(0).all()
    assert torch.equal(always.seen[0], seen + 1)
    plain = ClsDataPreprocessor(mean=MEAN, std=STD, to_rgb=True)(batch(), training=True)
    torch.testing.assert_close(out['inputs'], plain['inputs'] + 2 / torch.tensor(STD).view(
        1, 3, 1, 1))
    assert [int(s.gt_label) for s in out['data_samples']] == [0, 1, 2, 0]

    preprocessor(batch(), training=False)
    assert len(train_only.seen) == 1 and len(always.seen) == 2


def test_configured_transforms_resize_every_batch():
    preprocessor = build(train_transforms=[dict(type='BatchRandomCrop', size=32, padding=4),
                                           dict(type='BatchRandomFlip'),
                                           dict(type='BatchRandAugment')],
                         transforms=[dict(type='BatchResize', size=64)])
    for training in (True, False):
        assert preprocessor(batch(), training)['inputs'].shape == (4, 3, 64, 64)


def test_mixup_still_runs_after_the_transforms():
    preprocessor = build(transforms=[dict(type='BatchResize', size=64)],
                         batch_augments=dict(augments=[dict(type='Mixup', alpha=1.)]))
    out = preprocessor(batch(), training=True)
    assert out['inputs'].shape == (4, 3, 64, 64)
    assert out['data_samples'][0].gt_score.shape == (3, )


def test_unstacked_batches_are_an_actionable_error():
    data = batch()
    data['inputs'] = list(data['inputs'])
    with pytest.raises(TypeError, match=r"collate_fn=dict\(type='default_collate'\)"):
        build()(data, training=True)
