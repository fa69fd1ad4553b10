"""Non-finite losses and gradients: loss scaling skips the step, NonFiniteLossHook stops a
diverged run and tolerates a few skipped steps under loss scaling.

mmengine's AmpOptimWrapper asserts a GPU (and takes torch.cuda.amp's GradScaler), and its
autocast on the CPU accepts bfloat16 only. On this CPU-only machine the tests therefore run it
with torch's CPU GradScaler and bfloat16: covered are mmengine's loss-scaling logic (scale,
unscale, skip on non-finite gradients, back-off) and torch's non-finite check on the CPU; not
covered are float16 autocast and the CUDA kernels (tools/train.py --amp uses float16 on GPUs).
"""
import functools
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import Runner

from cmt_mm.engine.hooks import NonFiniteLossHook, TrainingDivergedError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='runs the optim wrapper and the model on the CPU')
INITIAL_SCALE = 2.**16  # torch's default


@pytest.fixture
def amp_on_cpu(monkeypatch):
    """mmengine's AmpOptimWrapper with torch's CPU GradScaler in place of the CUDA one."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))


def test_mmengine_amp_needs_a_gpu():
    """Why tools/train.py refuses --amp without a GPU, and why the tests below patch it."""
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1))


def test_loss_scaling_skips_the_step_with_an_inf_gradient(amp_on_cpu):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              loss_scale='dynamic', dtype='bfloat16')
    inputs = torch.randn(8, 4)

    def step(inject_inf=False):
        before = [p.detach().clone() for p in model.parameters()]
        handle = model.weight.register_hook(lambda grad: grad * float('inf'))
        if not inject_inf:
            handle.remove()
        with wrapper.optim_context(model):
            loss = model(inputs).float().pow(2).mean()
        wrapper.update_params(loss)
        handle.remove()
        return [not torch.equal(b, p) for b, p in zip(before, model.parameters())]

    assert all(step()) and wrapper.loss_scaler.get_scale() == INITIAL_SCALE
    # The inf gradient: no parameter moves (the bias's gradient was finite), the scale halves.
    assert not any(step(inject_inf=True))
    assert wrapper.loss_scaler.get_scale() == INITIAL_SCALE / 2
    for _ in range(3):
        assert all(step())
    assert wrapper.loss_scaler.get_scale() == INITIAL_SCALE / 2  # grows after 2000 steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


class LossBecomesNaN(BaseModel):
    """A linear regression whose loss is NaN at the given (1-based) iterations."""

    def __init__(self, nan_at=()):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.nan_at = set(nan_at)
        self.iteration = 0

    def forward(self, inputs, targets, mode='tensor'):
        outputs = self.linear(torch.stack(inputs)).float()
        if mode != 'loss':
            return outputs
        self.iteration += 1
        loss = (outputs - torch.stack(targets)).pow(2).mean()
        return dict(loss=loss * float('nan') if self.iteration in self.nan_at else loss,
                    loss_aux=loss.detach() * 0)


def run_until(tmp_path, model, optim_wrapper, max_iters=6):
    """Train ``model`` with NonFiniteLossHook; returns the runner and the warnings logged."""
    torch.manual_seed(0)
    data = [dict(inputs=torch.randn(2), targets=torch.randn(1)) for _ in range(4)]
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'{tmp_path.name}_{id(model)}',
        train_dataloader=dict(dataset=data, sampler=dict(type='InfiniteSampler', shuffle=False),
                              batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01), **optim_wrapper),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=None, logger=None),
        custom_hooks=[dict(type='cmt_mm.NonFiniteLossHook')])
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        runner.train()
    finally:
        logger.removeHandler(handler)
    return runner, warnings


def test_first_nan_loss_stops_training_without_loss_scaling(tmp_path):
    with pytest.raises(TrainingDivergedError) as error:
        run_until(tmp_path, LossBecomesNaN(nan_at=[3]), dict(type='OptimWrapper'))
    message = str(error.value)
    assert 'iteration 3 ' in message and 'loss=nan' in message
    assert 'loss_aux' not in message  # only the terms that are not finite


def test_loss_scaling_tolerates_a_few_nan_losses_in_a_row(tmp_path, amp_on_cpu):
    model = LossBecomesNaN(nan_at=[3, 4])
    runner, warnings = run_until(tmp_path, model, dict(type='AmpOptimWrapper', dtype='bfloat16'))
    assert runner.iter == 6
    skipped = [w for w in warnings if 'Non-finite loss' in w]
    assert len(skipped) == 2 and 'iteration 3 ' in skipped[0] and 'iteration 4 ' in skipped[1]
    # The scaler skipped both steps: the weights are finite and the scale halved twice.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert runner.optim_wrapper.loss_scaler.get_scale() == INITIAL_SCALE / 4


def test_loss_scaling_stops_after_its_patience(tmp_path, amp_on_cpu):
    assert NonFiniteLossHook().amp_patience == 3
    with pytest.raises(TrainingDivergedError, match=r'iteration 5 .*3 iterations in a row'):
        run_until(tmp_path, LossBecomesNaN(nan_at=[3, 4, 5]),
                  dict(type='AmpOptimWrapper', dtype='bfloat16'))
