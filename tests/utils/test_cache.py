"""cache_outside_compile caches eager calls like lru_cache, and torch.compile traces through it
without the warning it gives for lru_cache."""
import functools
import warnings

import torch

from cmt_mm.utils.cache import cache_outside_compile


def _compiled_warnings(helper):
    """Warnings from compiling a function that calls ``helper``, and its result."""

    def run(x):
        return x * helper(3)

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = torch.compile(run, backend='eager', fullgraph=True)(torch.ones(2))
    return [str(w.message) for w in caught if 'lru_cache' in str(w.message)], out


def test_eager_calls_are_cached():
    calls = []

    @cache_outside_compile(maxsize=None)
    def square(n):
        calls.append(n)
        return n * n

    assert square(3) == 9 and square(3) == 9 and square(4) == 16
    assert calls == [3, 4]
    assert square.cache_info().hits == 1
    square.cache_clear()
    square(3)
    assert calls == [3, 4, 3]


def test_compile_traces_through_without_warning():

    @functools.lru_cache(maxsize=None)
    def plain(n):
        return n * n

    @cache_outside_compile(maxsize=None)
    def wrapped(n):
        return n * n

    plain_warnings, _ = _compiled_warnings(plain)
    assert plain_warnings, 'dynamo no longer warns about lru_cache: this test checks nothing'
    wrapped_warnings, out = _compiled_warnings(wrapped)
    assert wrapped_warnings == []
    torch.testing.assert_close(out, torch.full((2, ), 9.))
