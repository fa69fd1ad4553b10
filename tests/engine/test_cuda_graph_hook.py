"""CUDAGraphHook replays the backbone's training forward and backward as CUDA graphs: the same
loss and gradients as the eager model, step after step, while the optimizer updates the weights;
tools/train.py --cuda-graph adds it and refuses to run without a GPU."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_errors import error_line
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from tiny_models import loss_and_grads, tiny_classifier

from cmt_mm.engine.hooks import CUDAGraphHook

REPO = Path(__file__).resolve().parents[2]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')


def graphed_run(model, batch):
    runner = SimpleNamespace(
        model=model, logger=MMLogger.get_current_instance(),
        optim_wrapper=OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    hook = CUDAGraphHook()
    hook.before_train(runner)
    hook.before_train_iter(runner, 0, batch)
    return hook, runner


def batch_of(images, labels):
    return dict(inputs=images, data_samples=[DataSample().set_gt_label(int(i)) for i in labels])


@needs_cuda
def test_graphed_backbone_trains_like_the_eager_one():
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    eager = tiny_classifier((2, 1, 1, 1)).cuda().train()
    graphed = tiny_classifier((2, 1, 1, 1)).cuda().train()
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1, 0])
    first = torch.randn(8, 3, 64, 64, device='cuda')
    _, runner = graphed_run(graphed, batch_of(first, labels))
    eager_optimizer = torch.optim.SGD(eager.parameters(), lr=0.1)
    names = list(eager.state_dict())
    for step in range(2):  # the second step: new images and updated weights
        images = first if step == 0 else torch.randn(8, 3, 64, 64, device='cuda')
        eager_loss, eager_grads = loss_and_grads(eager, images, labels)
        graphed_loss, graphed_grads = loss_and_grads(graphed, images, labels)
        torch.testing.assert_close(graphed_loss, eager_loss, rtol=1e-5, atol=1e-6)
        for name, grad in eager_grads.items():
            # float32 sums in another order (the captured convolutions' cuDNN algorithms), and
            # from the second step weights that differ as little: near-zero entries of a
            # gradient (all of the key bias's, whose true gradient is 0) differ by a fraction
            # of its largest, not of their own size.
            torch.testing.assert_close(graphed_grads[name], grad, rtol=1e-4,
                                       atol=1e-6 + 1e-4 * grad.abs().max().item(),
                                       msg=lambda m, at=f'step {step}: {name}': f'{at}: {m}')
        eager_optimizer.step()
        runner.optim_wrapper.step()
    assert list(graphed.state_dict()) == names  # checkpoints unchanged
    # evaluation runs eagerly, at any batch size (the capture's steps moved BatchNorm's stats)
    eager.load_state_dict(graphed.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(graphed.eval().extract_feat(images[:3]),
                                   eager.eval().extract_feat(images[:3]), rtol=1e-4, atol=1e-5)


@needs_cuda
def test_graphed_drop_path_draws_new_masks_each_step_and_the_capture_none():
    model = tiny_classifier(drop_path_rate=0.5).cuda().train()
    images = torch.randn(8, 3, 64, 64, device='cuda')
    generator_state = torch.cuda.get_rng_state()
    graphed_run(model, batch_of(images, torch.zeros(8)))
    assert torch.equal(torch.cuda.get_rng_state(), generator_state)  # the capture draws aside
    features = [model.extract_feat(images)[0].detach() for _ in range(2)]
    assert not torch.equal(*features)


@needs_cuda
def test_a_training_batch_of_another_shape_is_an_error():
    model = tiny_classifier().cuda().train()
    graphed_run(model, batch_of(torch.randn(8, 3, 64, 64, device='cuda'), torch.zeros(8)))
    with pytest.raises(RuntimeError, match=r'graphed for training inputs of shape '
                       r'\(8, 3, 64, 64\), got \(6, 3, 64, 64\).*drop_last=True'):
        model.extract_feat(torch.randn(6, 3, 64, 64, device='cuda'))


@pytest.mark.parametrize('options, message', [
    (['--cuda-graph', '--compile'], '--cuda-graph and --compile do not combine'),
    pytest.param(['--cuda-graph'], '--cuda-graph needs a GPU', marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason='the refusal is for machines without a GPU')),
])
def test_train_py_refuses_cuda_graph_where_it_cannot_run(tmp_path, options, message):
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/cifar10_scratch/cmt-s_1xb1024_cifar10-64px.py',
         *options, '--work-dir', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert message in error_line(proc)
