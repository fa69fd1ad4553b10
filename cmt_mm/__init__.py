"""CMT (Convolutional Neural Networks Meet Vision Transformers) for mmdet and mmpretrain."""
from .version import __version__

__all__ = ['__version__']
