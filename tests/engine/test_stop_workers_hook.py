"""StopPersistentWorkersHook ends persistent dataloader workers with the run, not at exit."""
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from cmt_mm.engine.hooks import StopPersistentWorkersHook


class Points(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((2, ), float(index)))


class Regressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, mode='tensor'):
        outputs = self.linear(inputs)
        return dict(loss=outputs.pow(2).mean()) if mode == 'loss' else list(outputs)


class MeanOutput(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(float(output) for output in data_samples)

    def compute_metrics(self, results):
        return dict(mean=sum(results) / len(results))


def build_runner(work_dir, hooks):
    loader = dict(dataset=Points(), batch_size=4, num_workers=2, persistent_workers=True,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=Regressor(), work_dir=str(work_dir), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=[MeanOutput()],
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)), custom_hooks=hooks,
        default_hooks=dict(checkpoint=None), default_scope='mmengine')


def worker_processes(dataloader):
    return list(dataloader._iterator._workers) if dataloader._iterator is not None else []


def test_workers_end_with_the_run_and_a_new_run_starts_new_ones(tmp_path):
    runner = build_runner(tmp_path, [dict(type='cmt_mm.StopPersistentWorkersHook')])
    runner.train()
    train_loader, val_loader = runner.train_dataloader, runner.val_dataloader
    assert worker_processes(train_loader) == [] and worker_processes(val_loader) == []

    metrics = runner.val()  # new workers, stopped again at the end
    assert set(metrics) == {'mean'}
    assert worker_processes(val_loader) == []


def test_without_the_hook_persistent_workers_outlive_the_run(tmp_path):
    """What the hook is for: mmengine leaves them running until the process exits."""
    runner = build_runner(tmp_path, [])
    runner.train()
    workers = worker_processes(runner.train_dataloader) + worker_processes(runner.val_dataloader)
    assert len(workers) == 4 and all(worker.is_alive() for worker in workers)
    StopPersistentWorkersHook().after_run(runner)
    assert not any(worker.is_alive() for worker in workers)
