"""CompileHook compiles the backbone (and neck) in place, whole or block by block: same outputs,
gradients and parameter names as the eager model; tools/train.py --compile adds it."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger

from tiny_models import loss_and_grads, tiny_classifier

from cmt_mm.engine.hooks import CompileHook


def fake_runner(model):
    return SimpleNamespace(model=model, logger=MMLogger.get_current_instance())


def assert_same_loss_and_gradients(eager, compiled):
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    eager_loss, eager_grads = loss_and_grads(eager, images, labels)
    compiled_loss, compiled_grads = loss_and_grads(compiled, images, labels)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_compiled_classifier_trains_like_the_eager_one():
    eager, compiled = tiny_classifier().train(), tiny_classifier().train()
    CompileHook(backend='aot_eager', dynamic=False).before_run(fake_runner(compiled))
    assert compiled.backbone._compiled_call_impl is not None
    assert compiled.neck._compiled_call_impl is not None
    assert compiled.head._compiled_call_impl is None  # heads stay eager
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged
    assert_same_loss_and_gradients(eager, compiled)


def test_regional_compiles_each_block_and_trains_like_the_eager_one():
    eager, compiled = tiny_classifier((2, 1, 1, 1)).train(), tiny_classifier((2, 1, 1, 1)).train()
    CompileHook(regional=True, backend='aot_eager').before_run(fake_runner(compiled))
    blocks = [block for stage in compiled.backbone.stages for block in stage.blocks]
    assert len(blocks) == 5 and all(b._compiled_call_impl is not None for b in blocks)
    assert compiled.backbone._compiled_call_impl is None  # stem and patch embeddings stay eager
    assert compiled.neck._compiled_call_impl is not None  # no repeated blocks: whole
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert_same_loss_and_gradients(eager, compiled)


def test_regional_compiles_one_graph_per_block_shape_whatever_the_drop_path():
    """Six blocks with six drop path probabilities in four shapes: four graphs."""
    from torch._dynamo.utils import counters
    model = tiny_classifier((3, 1, 1, 1), drop_path_rate=0.2).train()
    torch._dynamo.reset()
    counters.clear()
    CompileHook(regional=True, backend='eager').before_run(fake_runner(model))
    model.backbone(torch.randn(2, 3, 64, 64))
    assert counters['stats']['unique_graphs'] == 4
    assert torch._dynamo.config.recompile_limit >= 8  # the training and inference graphs


def test_model_without_the_named_modules_is_refused():
    with pytest.raises(ValueError, match=r"has none of the modules \('decoder',\)"):
        CompileHook(modules='decoder').before_run(fake_runner(tiny_classifier()))


@pytest.mark.parametrize('regional', [False, True])
def test_each_input_size_compiles_statically_unless_asked(regional):
    """Detection's image sizes change: from the second size on torch would compile with dynamic
    shapes, where Inductor fails on CMT's channels_last maps (pytorch/pytorch#185510; a RetinaNet
    CMT-Ti backbone compiled whole failed so at its second size)."""
    assert CompileHook(regional=regional).compile_kwargs['dynamic'] is False
    assert CompileHook(regional=regional, dynamic=True).compile_kwargs['dynamic'] is True
