from .loops import ResumableEpochBasedTrainLoop

__all__ = ['ResumableEpochBasedTrainLoop']
