# mmpretrain's runtime with cmt_mm's safeguards for long runs: atomic checkpoints, a clear stop
# on a non-finite loss, per-iteration and per-sample seeding, persistent workers stopped at the
# end; see default_runtime_mmdet.py.
_base_ = 'mmpretrain::_base_/default_runtime.py'

# Every classification config here feeds fixed-size crops, so cuDNN's autotuner times its kernels
# once per shape (mmpretrain leaves it off). Its heuristics alone can pick very slow kernels for
# grouped convolutions in channels_last (pytorch/pytorch#34977), and CMT has three depthwise convs
# per block. Detection keeps it off: each image size would be re-tuned.
env_cfg = dict(cudnn_benchmark=True)

default_hooks = dict(
    checkpoint=dict(type='cmt_mm.AtomicCheckpointHook'),
    non_finite_loss=dict(type='cmt_mm.NonFiniteLossHook'),
    iteration_seed=dict(type='cmt_mm.IterationSeedHook'),
    stop_workers=dict(type='cmt_mm.StopPersistentWorkersHook'))
