"""A memoising decorator that ``torch.compile`` can trace through."""
import functools
from typing import Callable, Optional

import torch


def cache_outside_compile(maxsize: Optional[int] = 128) -> Callable:
    """``functools.lru_cache(maxsize)``, bypassed while ``torch.compile`` traces.

    Dynamo cannot see into an ``lru_cache``: it warns and traces the function itself, every
    time it meets the call. Calling the function directly while tracing does the same without
    the warning; eager calls keep the cache. For pure functions of hashable arguments only.
    """
    def decorate(function: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(function)

        @functools.wraps(function)
        def call(*args):
            if torch.compiler.is_compiling():
                return function(*args)
            return cached(*args)

        call.cache_info = cached.cache_info
        call.cache_clear = cached.cache_clear
        return call

    return decorate
