"""tools/analysis_tools/get_flops.py reproduces the released models' MACs without a dataset."""
import re
from pathlib import Path

import pytest
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[2]
# MACs of the released code at the native resolution, counting the attention matrix products.
RELEASED_GMACS = {'ti': (160, 0.644), 'xs': (192, 1.558), 's': (224, 4.055), 'b': (256, 9.362)}


@pytest.fixture
def get_flops(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    tool = load_tool('tools/analysis_tools/get_flops.py')

    def run(*args):
        tool.main([str(arg) for arg in args])
        return capsys.readouterr().out

    return run


@pytest.mark.parametrize('variant', sorted(RELEASED_GMACS))
def test_classifier_flops_match_the_released_code(get_flops, variant):
    size, expected = RELEASED_GMACS[variant]
    out = get_flops(f'configs/cmt/cmt-{variant}_8xb128_in1k.py', '--shape', size)
    with_attention = float(re.search(r'with attention matrix products: ([\d.]+) G', out)[1])
    without = float(re.search(r'without attention matrix products: ([\d.]+) G', out)[1])
    assert with_attention == pytest.approx(expected, rel=0.01)
    assert without < with_attention
    assert f'(1, 3, {size}, {size})' in out


def test_non_square_shape_and_cfg_options(get_flops):
    out = get_flops('configs/cmt/cmt-s_8xb128_in1k.py', '--shape', 320, 256,
                    '--cfg-options', 'model.backbone.arch=ti', 'model.head.in_channels=368')
    assert 'Input shape: (1, 3, 256, 320)' in out
    assert 'Params: 9.49 M (9,492,426)' in out
