# mmdet's runtime with cmt_mm's safeguards for long runs (cmt_mm/engine/hooks/):
# - checkpoints and last_checkpoint are written atomically, and outdated checkpoints deleted only
#   afterwards, so a kill never leaves a corrupt or missing latest checkpoint (--resume auto);
# - a NaN or infinite loss stops training with an error naming the iteration and the loss terms
#   (under --amp after 3 in a row, whose steps the loss scaler skips), before anything is saved;
# - the random generators are seeded at every iteration from the seed and the iteration, and the
#   data pipeline's before every sample from the seed, the epoch and the sample's position, so a
#   resumed run draws the random numbers and augmentations of the uninterrupted one, whatever
#   the dataloader workers (persistent or not, any number);
# - persistent dataloader workers are stopped when the run ends, not at interpreter exit (with
#   pinned memory PyTorch waits 5 s per worker there).
# default_hooks = dict(non_finite_loss=None) (or iteration_seed=None) switches one off.
_base_ = 'mmdet::_base_/default_runtime.py'

default_hooks = dict(
    checkpoint=dict(type='cmt_mm.AtomicCheckpointHook'),
    non_finite_loss=dict(type='cmt_mm.NonFiniteLossHook'),
    iteration_seed=dict(type='cmt_mm.IterationSeedHook'),
    stop_workers=dict(type='cmt_mm.StopPersistentWorkersHook'))
# mmdet's visualizer, drawing padded (too-thin) images as the model saw them (--show-dir)
visualizer = dict(type='cmt_mm.DetLocalVisualizer')
