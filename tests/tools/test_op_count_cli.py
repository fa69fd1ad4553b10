"""tools/analysis_tools/op_count.py counts a detector backbone's training operators beside a
peer's, and sees autocast's casts only under AMP."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from tool_modules import load_tool

from cmt_mm.utils.benchmark import build_model, load_config

REPO = Path(__file__).resolve().parents[2]
CMT_RETINANET = 'configs/retinanet_cmt_s_1x_coco.py'
SWIN_RETINANET = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'


@pytest.fixture
def op_count(capsys):
    tool = load_tool('tools/analysis_tools/op_count.py')

    def run(*args):
        tool.main([*args, '--size', '64', '64', '--batch', '1', '--top', '3'])
        # what follows the title (mmdet's Swin warns on stdout that it has no weights)
        out = capsys.readouterr().out
        out = out[out.index('ATen operators'):]
        table = out.split('\n\n')[0].splitlines()[3:]  # after the title and the header
        cells = ([cell.strip() for cell in row.strip('|').split('|')] for row in table)
        return out, {row[0]: row[1:] for row in cells}

    return run


def number(cell: str) -> int:
    return int(cell.replace(',', ''))


def test_cmt_beside_swin_under_amp(op_count):
    out, rows = op_count(str(REPO / CMT_RETINANET), SWIN_RETINANET, '--dtype', 'bfloat16')
    assert out.startswith('ATen operators of one backbone + neck training forward and '
                          'backward: 64x64, batch 1, bfloat16')
    cmt, swin = rows[str(REPO / CMT_RETINANET)], rows[SWIN_RETINANET]
    cmt_ops, cmt_casts, swin_ops, swin_casts = map(number, cmt[:2] + swin[:2])
    # CMT-S: 25 blocks of convolutions, BatchNorms and linear layers against Swin-T's 12
    assert cmt_ops > 2 * swin_ops > 0
    assert cmt_casts > 0 and swin_casts > 0  # the casts of weights to bfloat16 and back
    assert (cmt[-1], swin[-1]) == ('1.00x', f'{swin_ops / cmt_ops:.2f}x')
    assert out.count('most called') == 2


def test_amp_casts_every_matmul_weight_forward_and_its_gradient_back(op_count):
    # ResNet-50's: CMT casts its weights in one operator per stage (test_weight_cast.py)
    config = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
    float32, bfloat16 = (op_count(config, '--dtype', dtype)[1][config]
                         for dtype in ('float32', 'bfloat16'))
    model = build_model(load_config(config), torch.device('cpu'))
    weights = sum(1 for part in (model.backbone, model.neck) for module in part.modules()
                  if isinstance(module, (nn.Conv2d, nn.Linear))
                  for _ in module.parameters(recurse=False))
    casts = number(bfloat16[1]) - number(float32[1])
    assert casts >= 2 * weights > 0
