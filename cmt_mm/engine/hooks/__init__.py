from .checkpoint_hook import AtomicCheckpointHook, atomic_write
from .compile_hook import CompileHook
from .cuda_graph_hook import CUDAGraphHook
from .iteration_seed_hook import IterationSeedHook
from .non_finite_loss_hook import NonFiniteLossHook, TrainingDivergedError
from .stop_workers_hook import StopPersistentWorkersHook

__all__ = [
    'AtomicCheckpointHook', 'CompileHook', 'CUDAGraphHook', 'IterationSeedHook',
    'NonFiniteLossHook', 'StopPersistentWorkersHook', 'TrainingDivergedError', 'atomic_write'
]
