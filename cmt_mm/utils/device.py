"""Facts about the GPU that sizes of kernel launches depend on."""
import torch

from .cache import cache_outside_compile


@cache_outside_compile(maxsize=None)
def multiprocessor_count(device: torch.device) -> int:
    """The SMs of CUDA ``device``; cached, since kernels size their grids by it on every call."""
    return torch.cuda.get_device_properties(device).multi_processor_count
