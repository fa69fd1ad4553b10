# mmpretrain's runtime with cmt_mm's safeguards for long runs: atomic checkpoints, a clear stop
# on a non-finite loss, per-iteration and per-sample seeding, persistent workers stopped at the
# end; see default_runtime_mmdet.py.
_base_ = 'mmpretrain::_base_/default_runtime.py'

default_hooks = dict(
    checkpoint=dict(type='cmt_mm.AtomicCheckpointHook'),
    non_finite_loss=dict(type='cmt_mm.NonFiniteLossHook'),
    iteration_seed=dict(type='cmt_mm.IterationSeedHook'),
    stop_workers=dict(type='cmt_mm.StopPersistentWorkersHook'))

# Classification trains and tests at one input size: `--compile` compiles CMT block by block,
# one graph per stage, in a third of the time of the whole backbone (cmt_mm.CompileHook).
compile_options = dict(regional=True)
