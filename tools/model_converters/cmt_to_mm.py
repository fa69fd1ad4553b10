"""Convert a released CMT classifier checkpoint to an mmpretrain one.

    python tools/model_converters/cmt_to_mm.py cmt_small.pth cmt-s_in1k.pth

The result loads with ``tools/test.py configs/cmt/cmt-s_8xb128_in1k.py cmt-s_in1k.pth`` and as
``init_cfg=dict(type='Pretrained', checkpoint='cmt-s_in1k.pth')`` of a detection backbone.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from cmt_mm.utils.checkpoint import (CheckpointError, convert_released_cmt, is_released_cmt,
                                     load_checkpoint_file, weights_of)


def convert_file(src: str, dst: str) -> int:
    """Convert ``src`` into ``dst``; returns the number of tensors written."""
    weights = weights_of(load_checkpoint_file(src), src)
    if not is_released_cmt(weights):
        raise CheckpointError(f'{src!r} does not have the key names of a released CMT '
                              f'checkpoint (first keys: {list(weights)[:3]})')
    state_dict = convert_released_cmt(weights)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save({'state_dict': state_dict, 'meta': {'converted_from': osp.basename(src)}}, tmp)
    os.replace(tmp, dst)  # never leave a half-written file under the final name
    return len(state_dict)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('src', help='released checkpoint (weights under "model")')
    parser.add_argument('dst', help='output path')
    args = parser.parse_args(argv)
    try:
        count = convert_file(args.src, args.dst)
    except CheckpointError as err:
        sys.exit(f'error: {err}')
    print(f'wrote {count} tensors to {args.dst}')


if __name__ == '__main__':
    main()
