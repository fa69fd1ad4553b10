"""count_ops sees every ATen operator a function dispatches, its backward's too, and tells views
(which launch nothing) apart."""
import torch

from cmt_mm.utils.op_count import count_ops, is_view


def test_counts_forward_and_backward_operators_and_views_apart():
    weight = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 4)

    def step():
        (x @ weight.t()).relu().sum().backward()

    count = count_ops(step)
    # forward: mm, relu, sum; backward: ones_like seeds it, threshold_backward undoes the
    # relu, one mm gives the weight's gradient (x needs none); the transposes and the sum's
    # expand are views
    assert count.ops == {'mm': 2, 'relu': 1, 'sum': 1, 'ones_like': 1,
                         'threshold_backward': 1}
    assert count.total == 6 and count.views > 0


def test_views_are_told_apart_by_schema():
    aten = torch.ops.aten
    assert is_view(aten.view.default) and is_view(aten.transpose.int)
    assert is_view(aten._unsafe_view.default)  # a view whose schema does not say so
    assert not is_view(aten.add.Tensor) and not is_view(aten.clone.default)
