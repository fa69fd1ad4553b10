"""A tiny CMT classifier and its loss and gradients, for tests that compare a model run another
way (compiled, CUDA-graphed) with the eager one."""
import torch

from cmt_mm.registry import MODELS

# A CMT of a few thousand parameters, one block per stage.
TINY_ARCH = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], mlp_ratio=2, stem_channels=8)


def tiny_classifier(depths=(1, 1, 1, 1), drop_path_rate=0.):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='cmt_mm.CMT',
                      arch=dict(TINY_ARCH, depths=list(depths), img_size=64),
                      out_indices=(3, ), drop_path_rate=drop_path_rate),
        neck=dict(type='mmpretrain.GlobalAveragePooling'),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=3, in_channels=64)))


def loss_and_grads(model, images, labels):
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(int(label)).to(images.device) for label in labels]
    model.zero_grad()
    loss = model.loss(images, samples)['loss']
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}
