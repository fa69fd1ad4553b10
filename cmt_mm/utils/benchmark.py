"""Speed and memory of classifiers and detectors built from configs, on synthetic inputs.

The measurement behind ``tools/analysis_tools/benchmark.py`` (one config) and
``tools/analysis_tools/benchmark_compare.py`` (CMT beside Swin-T, DeiT-S, ResNet-50, ConvNeXt-T).

What one step is:

* classification inference: ``model(x, mode='tensor')`` (backbone, neck, head; no data
  preprocessor) on random images at the config's test crop size;
* classification training: ``model.train_step`` (preprocessor with the config's batch
  augmentations, loss, backward, AdamW step) on random uint8 images, at the same sizes;
* detection inference: ``model.test_step`` (data preprocessor, forward, box and mask
  post-processing, all on the device) on random uint8 images. Score thresholds are set to 0, so
  every image keeps ``max_per_img`` detections, as a trained model does on COCO, whatever the
  random weights;
* detection training: ``model.train_step`` (preprocessor, losses, backward, AdamW step) through an
  mmengine ``OptimWrapper``, or an ``AmpOptimWrapper`` for bfloat16 / float16, on random boxes
  (and masks) from ``mmdet.testing.demo_mm_inputs``. The same AdamW for every model (fused, as
  cmt_mm's schedules train), so that step times compare models, not recipes. A two-stage
  detector's training step runs with cuDNN's autotuner off: its mask head sees a new number of
  positive RoIs in every step, and the autotuner would search algorithms for each (mmdet trains
  with it off too).

Timing: ``warmup`` steps, then ``repeats`` runs of as many steps as fill ``min_repeat_time``
seconds, timed with CUDA events; the median per step is reported. Peak memory is torch's
``max_memory_allocated`` over the timed runs: weights, gradients, optimizer state and
activations; plus, where the step replays CUDA graphs, the memory their pools hold (replays
allocate nothing, so the allocator's peak misses it). The warm-up is left out: its one-off
allocations (with ``cudnn.benchmark``, cuDNN tries its algorithms, each with its own workspace,
in the first steps) are not what a run holds.

Complexity, two figures (FLOPs = 2 x MACs throughout):

* ``macs_per_image``: the multiply-accumulates of one image's tensor forward, by mmengine's
  ``FlopAnalyzer`` with BatchNorm left out and the two matrix products inside
  ``scaled_dot_product_attention`` added (for CMT: ``cmt_mm.utils.complexity``'s count with
  attention), the figure papers print;
* ``step_flops_per_image``: the FLOPs a timed step executes, by torch's ``FlopCounterMode`` on
  one eager step (convolutions, matrix products, attention); a training step counts as 3 times
  its forward. The achieved TFLOP/s of a cell is this over the median step time, set against a
  large ``torch.matmul`` measured in the same dtype.

Detectors under AMP run the network in the AMP dtype and, in float32, what mmcv 2.1 cannot run
otherwise: the heads' post-processing (NMS), RoIAlign and the sigmoid focal loss (no bfloat16
kernels); see :func:`run_detection_ops_in_float32`. The same for every backbone.

Models are built without any ``Pretrained`` init (no checkpoint is read or downloaded).
A cell that cannot run is reported, not raised: ``unsupported`` (kernels missing for a dtype,
AMP training off the GPU), ``oom`` or ``error`` (with the message; the traceback goes to stderr).

Where the time goes: with ``profile_steps``, each measured cell then runs that many steps under
``torch.profiler`` and keeps the operators that took the most time (self time on the GPU, or
on the CPU for a CPU run), per step; the tools print them as a table under the cell.
"""
import argparse
import contextlib
import copy
import functools
import gc
import importlib.metadata
import logging
import math
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from cmt_mm.models.backbones.cmt import LightweightAttention
from cmt_mm.utils.complexity import RunAsForward, attention_flops

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
MODES = ('inference', 'train')
# A static loss scale: a dynamic one starts high and skips the first steps' optimizer updates.
AMP_LOSS_SCALE = 512.
GT_PER_IMAGE = 8


class Unsupported(RuntimeError):
    """This model cannot run this cell (dtype, device); reported in the results."""


@dataclass
class Settings:
    """What to measure and how; the defaults fit an H100 run of the comparison."""
    device: str = 'cuda'
    dtypes: Sequence[str] = ('float32', 'bfloat16', 'float16')
    modes: Sequence[str] = MODES
    batch_sizes: Sequence[int] = (1, 32, 128)  # classification, both modes
    cls_size: Optional[int] = None  # default: the config's test crop size
    det_size: Tuple[int, int] = (1280, 800)  # width, height
    det_infer_batch: int = 1
    det_train_batch: int = 2
    warmup: int = 5
    repeats: int = 5
    min_repeat_time: float = 0.5  # 0.1 timed a 0.25 s detection step once per run: +-15%
    with_cp: Optional[bool] = None  # None keeps the config's
    channels_last: bool = False
    compile_mode: Optional[str] = None  # a torch.compile mode ('default', ...); None: eager
    fuse_bn: bool = False
    count_flops: bool = True
    profile_steps: int = 0  # steps to profile after timing a cell; 0: none
    profile_rows: int = 15


@dataclass
class Timing:
    seconds: List[float]  # per step, one entry per repeat
    steps: int  # steps in each repeat
    peak_memory: Optional[int]  # bytes; CUDA only

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Cell:
    """One measurement: a mode (inference or train), a dtype and a batch size."""
    mode: str
    dtype: str
    batch_size: int
    status: str = 'ok'  # ok | unsupported | oom | error
    message: str = ''
    median_ms: Optional[float] = None
    repeats_ms: List[float] = field(default_factory=list)
    steps_per_repeat: int = 0
    images_per_s: Optional[float] = None
    peak_memory_mib: Optional[float] = None
    tflops: Optional[float] = None
    fraction_of_matmul_peak: Optional[float] = None
    profile: List[dict] = field(default_factory=list)  # see profile_step


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _elapsed(step: Callable, device: torch.device, steps: int) -> float:
    """Seconds that ``steps`` calls of ``step`` take, on the device's clock."""
    if device.type == 'cuda':
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - began


def graph_pool_bytes(segments: List[dict], device_index: int) -> int:
    """Bytes that CUDA graphs' private memory pools hold on a device beyond their live tensors.

    ``segments`` is ``torch.cuda.memory_snapshot()``. A graph replays its kernels into memory
    its capture allocated from such a pool: replays allocate nothing, so
    ``max_memory_allocated`` does not see that memory, yet the process holds it.
    """
    return sum(segment['total_size'] - segment['allocated_size'] for segment in segments
               if tuple(segment['segment_pool_id']) != (0, 0)
               and segment['device'] == device_index)


def _cuda_graph_memory(device: torch.device) -> int:
    index = torch.cuda.current_device() if device.index is None else device.index
    return graph_pool_bytes(torch.cuda.memory_snapshot(), index)


def time_steps(step: Callable, device: torch.device, warmup: int, repeats: int,
               min_repeat_time: float) -> Timing:
    """Warm up, then time ``repeats`` runs of ``step``, each lasting ``min_repeat_time``.

    The peak memory is ``max_memory_allocated`` over the timed runs, plus what CUDA graphs
    captured in the warm-up (``torch.compile``'s reduce-overhead mode) hold to replay in.
    """
    on_cuda = device.type == 'cuda'
    graphs_before = _cuda_graph_memory(device) if on_cuda else 0
    for _ in range(warmup):
        step()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    one = _elapsed(step, device, 1)
    steps = max(1, math.ceil(min_repeat_time / max(one, 1e-6)))
    seconds = [_elapsed(step, device, steps) / steps for _ in range(repeats)]
    peak = None
    if on_cuda:
        graphs = max(_cuda_graph_memory(device) - graphs_before, 0)
        peak = torch.cuda.max_memory_allocated(device) + graphs
    return Timing(seconds, steps, peak)


def profile_step(step: Callable, device: torch.device, steps: int, rows: int) -> List[dict]:
    """The ``rows`` operators with the most self time per step over ``steps`` calls of
    ``step``: GPU time on a GPU (the CPU time beside it shows launch-bound operators), else CPU
    time. Each row: name, calls, self_device_ms, self_cpu_ms, all per step."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize(device)
    events = prof.key_averages()

    def device_us(event):
        return getattr(event, 'self_device_time_total', 0) if on_gpu else 0

    key = device_us if on_gpu else (lambda event: event.self_cpu_time_total)
    top = sorted(events, key=key, reverse=True)[:rows]
    return [dict(name=event.key, calls=event.count / steps,
                 self_device_ms=device_us(event) / steps / 1e3,
                 self_cpu_ms=event.self_cpu_time_total / steps / 1e3) for event in top]


def profile_table(rows: List[dict]) -> str:
    return markdown_table(
        ['operator', 'calls / step', 'self GPU ms / step', 'self CPU ms / step'],
        [[row['name'][:70], f"{row['calls']:g}", f"{row['self_device_ms']:.2f}",
          f"{row['self_cpu_ms']:.2f}"] for row in rows])


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, warmup: int = 3,
                       repeats: int = 5, size: Optional[int] = None) -> float:
    """Measured TFLOP/s of a large square ``torch.matmul`` (8192 on a GPU, 1024 on a CPU)."""
    size = size or (8192 if device.type == 'cuda' else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timing = time_steps(lambda: torch.matmul(a, b), device, warmup, repeats, 0.1)
    return 2 * size**3 / timing.median / 1e12


@contextlib.contextmanager
def cudnn_autotuner(enabled: bool):
    """``torch.backends.cudnn.benchmark`` set to ``enabled`` inside the block."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Configs and models
# ---------------------------------------------------------------------------------------------


def resolve_config_path(path: str) -> str:
    """A config file, or ``mmdet::`` / ``mmpretrain::`` paths into those packages' configs."""
    if '::' not in path:
        return path
    from mmengine.utils import get_installed_path
    package, relative = path.split('::', 1)
    return osp.join(get_installed_path(package), '.mim', 'configs', relative)


def is_detection(cfg) -> bool:
    return cfg.get('default_scope') == 'mmdet'


def load_config(path: str, cfg_options: Optional[dict] = None):
    """Load a config, prepare the environment for its task, then import its custom modules."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from cmt_mm.utils.compat import setup_environment

    cfg = Config.fromfile(resolve_config_path(path), import_custom_modules=False)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # Before mmpretrain.models / mmdet.models are imported (the custom imports pull them in).
    setup_environment(detection=is_detection(cfg))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    return cfg


def _is_pretrained(init_cfg) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def drop_pretrained_init(node) -> None:
    """Remove every ``Pretrained`` init_cfg from a model config, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != 'init_cfg':
                drop_pretrained_init(value)
            elif isinstance(value, list):
                node[key] = [cfg for cfg in value if not _is_pretrained(cfg)] or None
            elif _is_pretrained(value):
                node[key] = None
    elif isinstance(node, (list, tuple)):
        for item in node:
            drop_pretrained_init(item)


def keep_all_detections(node) -> None:
    """Set every ``score_thr`` of a test_cfg to 0, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'score_thr':
                node[key] = 0.
            else:
                keep_all_detections(value)


def build_model(cfg, device: torch.device, with_cp: Optional[bool] = None) -> nn.Module:
    """The config's model, initialised from scratch, on ``device``."""
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS, init_default_scope

    cfg = copy.deepcopy(cfg)
    drop_pretrained_init(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner merges it
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    if with_cp is not None:
        cfg.model.backbone.with_cp = with_cp
    if is_detection(cfg):
        keep_all_detections(cfg.model.get('test_cfg'))
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model).to(device)
    # mmengine logs how every parameter was initialised, at INFO level.
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model


def classification_size(cfg) -> int:
    """The test crop size of a classification config: its native resolution."""
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform['type'].endswith('CenterCrop'):
            size = transform['crop_size']
            return size if isinstance(size, int) else size[0]
    raise ValueError('the test pipeline has no CenterCrop; give the input size (--cls-size)')


def classification_batch(batch_size: int, size_hw: Tuple[int, int], device: torch.device,
                         channels_last: bool = False) -> dict:
    """Random uint8 images labelled class 0, as a classification dataloader gives them."""
    from mmpretrain.structures import DataSample

    inputs = torch.randint(0, 256, (batch_size, 3, *size_hw), dtype=torch.uint8, device=device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return dict(inputs=inputs, data_samples=[DataSample().set_gt_label(0)
                                             for _ in range(batch_size)])


def detection_batch(model: nn.Module, batch_size: int, width: int, height: int,
                    device: torch.device) -> dict:
    """Random uint8 images with random boxes (and masks, when the model has a mask head)."""
    from mmdet.testing import demo_mm_inputs

    roi_head = getattr(model, 'roi_head', None)
    box_head = roi_head.bbox_head if roi_head is not None else model.bbox_head
    data = demo_mm_inputs(
        batch_size, image_shapes=(3, height, width), num_items=[GT_PER_IMAGE] * batch_size,
        num_classes=box_head.num_classes, with_mask=bool(getattr(roi_head, 'with_mask', False)),
        device=device)
    for sample in data['data_samples']:
        sample.set_metainfo(dict(scale_factor=(1., 1.)))
    return data


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def _sdpa_macs(inputs: list, outputs: list) -> int:
    """MACs of q @ k^T and attn @ v inside ``scaled_dot_product_attention``."""
    from mmengine.analysis.jit_handles import get_shape
    query, key, value = (get_shape(v) for v in inputs[:3])
    return math.prod(query[:-1]) * key[-2] * (query[-1] + value[-1])


def forward_macs(model: nn.Module, run: Callable, inputs: torch.Tensor) -> int:
    """MACs of ``run(inputs)`` by mmengine's counter, BatchNorm left out, attention included.

    CMT's attention products are counted from its token and key grids: above the learned key
    grid its SDPA also multiplies the position bias's factors (``LowRankBias``), work of the
    implementation (1280x800 RetinaNet CMT-S: 366 GMACs executed, 303 in the architecture).
    """
    from mmengine.analysis import FlopAnalyzer

    model.eval()
    wrapper = RunAsForward(model, run)
    analyzer = FlopAnalyzer(wrapper, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.set_op_handle('aten::batch_norm', lambda inputs, outputs: 0)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
    with torch.no_grad():
        total = analyzer.total()
        by_module = analyzer.by_module_and_operator()
    cmt_attention = [name for name, module in wrapper.named_modules()
                     if isinstance(module, LightweightAttention)]
    if not cmt_attention:
        return int(total)
    executed = sum(by_module[name]['scaled_dot_product_attention'] for name in cmt_attention)
    return int(total - executed + attention_flops(model, run, inputs))


def executed_flops(run: Callable) -> int:
    """FLOPs (2 x MACs of convolutions, matrix products, attention) that ``run()`` executes.

    torch's FlopCounterMode sees what actually runs, data-dependent detection heads included.
    Forward only: it counts a grouped convolution's backward ``groups`` times over.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def amp_autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; off for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _optim_wrapper(model: nn.Module, dtype: torch.dtype):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=0.05, fused=True)
    if dtype == torch.float32:
        return OptimWrapper(optimizer)
    try:
        return AmpOptimWrapper(optimizer=optimizer, dtype=dtype, loss_scale=AMP_LOSS_SCALE)
    except AssertionError as err:  # mmengine asserts a GPU (or NPU, MLU, MUSA)
        raise Unsupported(f'AMP training: {err}') from None


def _float32(value):
    """``value`` with its floating tensors (also in lists, tuples, dicts) in float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if type(value) in (list, tuple):
        return type(value)(_float32(item) for item in value)
    if type(value) is dict:
        return {key: _float32(item) for key, item in value.items()}
    return value


def _first_float_dtype(args: tuple) -> Optional[torch.dtype]:
    return next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()),
                None)


def _in_float32(function: Callable, device_type: str) -> Callable:
    """``function`` with autocast off and floating tensor arguments in float32."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return function(*_float32(args), **_float32(kwargs))
    return call


def _bfloat16_through_float32(function: Callable, device_type: str) -> Callable:
    """``function`` (an mmcv op without bfloat16 kernels) computing bfloat16 in float32 and
    answering in bfloat16, as a bfloat16 kernel would."""
    in_float32 = _in_float32(function, device_type)

    @functools.wraps(function)
    def call(*args, **kwargs):
        if _first_float_dtype(args) != torch.bfloat16:
            return function(*args, **kwargs)
        return in_float32(*args, **kwargs).to(torch.bfloat16)
    return call


def run_detection_ops_in_float32(model: nn.Module, device_type: str) -> None:
    """What mmcv 2.1 cannot run under AMP runs in float32, in place: the heads'
    post-processing (``predict_by_feat``, as mmdet 2's ``force_fp32`` did: mmcv's NMS takes
    float32 only), and, in bfloat16, RoIAlign and the sigmoid focal loss (half kernels only)."""
    from mmcv.ops import RoIAlign
    from mmdet.models.losses import FocalLoss

    for module in model.modules():
        if hasattr(type(module), 'predict_by_feat'):
            module.predict_by_feat = _in_float32(module.predict_by_feat, device_type)
        if isinstance(module, (RoIAlign, FocalLoss)):
            module.forward = _bfloat16_through_float32(module.forward, device_type)


def _contiguous_outputs(module, args, outputs):
    # mmcv's compiled ops (RoIAlign) read their input as contiguous NCHW.
    return tuple(out.contiguous() for out in outputs)


def _to_channels_last(model: nn.Module, detection: bool) -> None:
    """A classifier converts entirely; a detector its backbone, which then outputs NCHW."""
    if not detection:
        model.to(memory_format=torch.channels_last)
        return
    model.backbone.to(memory_format=torch.channels_last)
    model.backbone.register_forward_hook(_contiguous_outputs)


def _compile_options(mode: str) -> dict:
    return dict(mode=None if mode == 'default' else mode, dynamic=False)


def _compile_backbone_and_neck(model: nn.Module, mode: str) -> None:
    """In place, so that ``model.train_step`` and ``model.test_step`` run them compiled (a
    classifier's inference compiles the whole model; a detector's heads sample and post-process
    data-dependently)."""
    from cmt_mm.engine.hooks.compile_hook import compile_submodules

    compile_submodules(model, ('backbone', 'neck'), **_compile_options(mode))


# ---------------------------------------------------------------------------------------------
# One config
# ---------------------------------------------------------------------------------------------


class ConfigBenchmark:
    """Measure one config's cells under ``settings``, logging each with ``log``.

    ``matmul_peaks`` maps a dtype to its measured matmul TFLOP/s.
    """

    def __init__(self, config: str, settings: Settings, cfg_options: Optional[dict] = None,
                 matmul_peaks: Optional[dict] = None, log: Callable = print):
        self.config = config
        self.settings = settings
        self.device = torch.device(settings.device)
        self.matmul_peaks = matmul_peaks or {}
        self.log = log
        self.cfg = load_config(config, cfg_options)
        self.detection = is_detection(self.cfg)
        if self.detection:
            width, height = settings.det_size
            self.size_hw = (height, width)
        else:
            size = settings.cls_size or classification_size(self.cfg)
            self.size_hw = (size, size)

    def run(self) -> dict:
        """The model's size and complexity, and a :class:`Cell` (as a dict) per measurement.

        ``macs_per_image``: mmengine's count of one image's tensor forward, the figure papers
        print (a two-stage detector's RoI heads then see all 1000 proposals);
        ``step_flops_per_image``: what a timed step executes (training: 3 x its forward).
        """
        s = self.settings
        model = build_model(self.cfg, self.device, s.with_cp)
        if s.channels_last:
            _to_channels_last(model, self.detection)
        result = dict(config=self.config,
                      task='detection' if self.detection else 'classification',
                      input_hw=list(self.size_hw),
                      params=sum(p.numel() for p in model.parameters()),
                      macs_per_image=None, step_flops_per_image={})
        if s.count_flops:
            result['macs_per_image'] = self._tensor_forward_macs(model)
            result['step_flops_per_image'] = self._step_flops(model)
        if self.detection:
            cells = self._detection_cells(model, result['step_flops_per_image'])
        else:
            cells = self._classification_cells(model, result['step_flops_per_image'])
        result['cells'] = [asdict(cell) for cell in cells]
        del model
        _release_memory(self.device)
        return result

    def _batch(self, model: nn.Module, batch_size: int) -> dict:
        width, height = self.settings.det_size
        return detection_batch(model, batch_size, width, height, self.device)

    def _tensor_forward_macs(self, model: nn.Module) -> int:
        if not self.detection:
            return forward_macs(model, lambda x: model(x, mode='tensor'),
                                torch.randn(1, 3, *self.size_hw, device=self.device))
        data = model.data_preprocessor(self._batch(model, 1))
        return forward_macs(model, lambda x: model._forward(x, data['data_samples']),
                            data['inputs'])

    def _step_flops(self, model: nn.Module) -> dict:
        """FLOPs per image of each mode's step, counted on one step of the eager model."""
        s = self.settings
        model.eval()
        if not self.detection:
            x = torch.randn(1, 3, *self.size_hw, device=self.device)
            forward = executed_flops(lambda: model(x, mode='tensor'))
            return dict(inference=forward, train=3 * forward)
        flops = {}
        if 'inference' in s.modes:
            data = self._batch(model, s.det_infer_batch)
            flops['inference'] = executed_flops(lambda: model.test_step(data)) \
                / s.det_infer_batch
        if 'train' in s.modes:
            data = self._batch(model, s.det_train_batch)
            model.train()
            flops['train'] = 3 * executed_flops(
                lambda: model(**model.data_preprocessor(data, True), mode='loss')) \
                / s.det_train_batch
        return flops

    def _inference_model(self, model: nn.Module) -> nn.Module:
        if not self.settings.fuse_bn:
            return model
        from cmt_mm.utils.fuse import fuse_conv_bn

        # Training needs the unfused model: fuse a copy when it will train.
        trains = self.detection or 'train' in self.settings.modes
        return fuse_conv_bn(copy.deepcopy(model) if trains else model)

    def _classification_cells(self, model: nn.Module, flops: dict) -> List[Cell]:
        cells = []
        if 'inference' in self.settings.modes:
            cells += self._classification_inference_cells(model, flops)
        if 'train' in self.settings.modes:
            cells += self._classification_train_cells(model, flops)
        return cells

    def _classification_inference_cells(self, model: nn.Module, flops: dict) -> List[Cell]:
        s = self.settings
        model = self._inference_model(model).eval()
        forward = torch.compile(model, **_compile_options(s.compile_mode)) \
            if s.compile_mode else model
        cells = []
        for dtype in s.dtypes:
            for batch in s.batch_sizes:
                def make_step(dtype=dtype, batch=batch):
                    x = torch.randn(batch, 3, *self.size_hw, device=self.device)
                    if s.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)

                    def step():
                        with torch.no_grad(), amp_autocast(self.device, DTYPES[dtype]):
                            forward(x, mode='tensor')
                    return step
                cells.append(self._measure('inference', dtype, batch, make_step,
                                           flops.get('inference')))
        return cells

    def _classification_train_cells(self, model: nn.Module, flops: dict) -> List[Cell]:
        s = self.settings
        if s.compile_mode:
            _compile_backbone_and_neck(model, s.compile_mode)
        cells = []
        for dtype in s.dtypes:
            for batch in s.batch_sizes:
                def make_step(dtype=dtype, batch=batch):
                    data = classification_batch(batch, self.size_hw, self.device,
                                                s.channels_last)
                    optim_wrapper = _optim_wrapper(model, DTYPES[dtype])
                    model.train()
                    return lambda: model.train_step(data, optim_wrapper)
                cells.append(self._measure('train', dtype, batch, make_step, flops.get('train')))
                model.zero_grad(set_to_none=True)
        return cells

    def _detection_cells(self, model: nn.Module, flops: dict) -> List[Cell]:
        s = self.settings
        infer_model = self._inference_model(model)
        for m in [model] if infer_model is model else [model, infer_model]:
            run_detection_ops_in_float32(m, self.device.type)
            if s.compile_mode:
                _compile_backbone_and_neck(m, s.compile_mode)
        cells = []
        for dtype in s.dtypes:
            if 'inference' in s.modes:
                def make_infer_step(dtype=dtype):
                    data = self._batch(infer_model, s.det_infer_batch)
                    infer_model.eval()

                    def step():
                        with torch.no_grad(), amp_autocast(self.device, DTYPES[dtype]):
                            infer_model.test_step(data)
                    return step
                cells.append(self._measure('inference', dtype, s.det_infer_batch,
                                           make_infer_step, flops.get('inference')))
            if 'train' in s.modes:
                def make_train_step(dtype=dtype):
                    data = self._batch(model, s.det_train_batch)
                    optim_wrapper = _optim_wrapper(model, DTYPES[dtype])
                    model.train()
                    autotune = not hasattr(model, 'roi_head')  # RoI shapes vary per step

                    def step():
                        with cudnn_autotuner(autotune):
                            model.train_step(data, optim_wrapper)
                    return step
                cells.append(self._measure('train', dtype, s.det_train_batch, make_train_step,
                                           flops.get('train')))
                model.zero_grad(set_to_none=True)
        return cells

    def _measure(self, mode: str, dtype: str, batch: int, make_step: Callable,
                 flops_per_image: Optional[float]) -> Cell:
        s = self.settings
        cell = Cell(mode, dtype, batch)
        if s.compile_mode:
            torch._dynamo.reset()  # a fresh static graph per cell, within the recompile limit
        try:
            step = make_step()
            timing = time_steps(step, self.device, s.warmup, s.repeats, s.min_repeat_time)
            if s.profile_steps:
                cell.profile = profile_step(step, self.device, s.profile_steps, s.profile_rows)
        except Unsupported as err:
            cell.status, cell.message = 'unsupported', str(err)
        except torch.OutOfMemoryError:
            cell.status, cell.message = 'oom', 'out of memory'
        except Exception as err:  # one failing cell must not cost the rest of a GPU run
            # Kernels missing for a dtype (mmcv ops beyond those run in float32).
            cell.status = 'unsupported' if 'not implemented for' in str(err) else 'error'
            cell.message = f'{type(err).__name__}: ' + (str(err).strip().splitlines() or [''])[0]
            if cell.status == 'error':
                traceback.print_exc(file=sys.stderr)
        else:
            cell.median_ms = timing.median * 1e3
            cell.repeats_ms = [t * 1e3 for t in timing.seconds]
            cell.steps_per_repeat = timing.steps
            cell.images_per_s = batch / timing.median
            if timing.peak_memory is not None:
                cell.peak_memory_mib = timing.peak_memory / 2**20
            if flops_per_image:
                cell.tflops = flops_per_image * cell.images_per_s / 1e12
                peak = self.matmul_peaks.get(dtype)
                if peak:
                    cell.fraction_of_matmul_peak = cell.tflops / peak
        self.log(describe_cell(cell))
        if cell.profile:
            self.log(f'where the time of one step goes ({s.profile_steps} steps profiled):\n'
                     + profile_table(cell.profile))
        _release_memory(self.device)
        return cell


def describe_cell(cell: Cell) -> str:
    head = f'{cell.mode} {cell.dtype} batch {cell.batch_size}: '
    if cell.status != 'ok':
        return head + f'{cell.status} ({cell.message})'
    text = head + f'{cell.median_ms:.2f} ms, {cell.images_per_s:.1f} images/s'
    if cell.peak_memory_mib is not None:
        text += f', peak {cell.peak_memory_mib:.0f} MiB'
    if cell.tflops is not None:
        text += f', {cell.tflops:.2f} TFLOP/s'
    return text


# ---------------------------------------------------------------------------------------------
# Command-line options, shared by the tools
# ---------------------------------------------------------------------------------------------


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """The measurement options; a default left out here comes from ``Settings``."""
    parser.add_argument('--device', help='cuda (default) or cpu')
    parser.add_argument('--dtypes', nargs='+', choices=list(DTYPES),
                        help='float32 and the AMP dtypes (default: all three)')
    parser.add_argument('--modes', nargs='+', choices=list(MODES),
                        help='inference and/or train (default: both)')
    parser.add_argument('--batch-sizes', type=int, nargs='+',
                        help='classification batch sizes, both modes (default: 1 32 128)')
    parser.add_argument('--cls-size', type=int,
                        help='classification input size (default: the config\'s test crop)')
    parser.add_argument('--det-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='detection input size (default: 1280 800)')
    parser.add_argument('--det-infer-batch', type=int, help='default: 1')
    parser.add_argument('--det-train-batch', type=int, help='default: 2')
    parser.add_argument('--warmup', type=int, help='steps before timing (default: 5; with '
                        '--compile the first step compiles)')
    parser.add_argument('--repeats', type=int, help='timed runs; the median is reported '
                        '(default: 5)')
    parser.add_argument('--min-repeat-time', type=float,
                        help='seconds each timed run lasts at least (default: 0.5)')
    parser.add_argument('--with-cp', action=argparse.BooleanOptionalAction,
                        help='override the backbone\'s with_cp (activation checkpointing)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels_last weights and inputs (a detector: its backbone)')
    parser.add_argument('--compile', nargs='?', const='default', metavar='MODE',
                        help='torch.compile (a classifier whole, a detector its backbone and '
                        'neck); MODE: default, reduce-overhead, max-autotune')
    parser.add_argument('--fuse-bn', action='store_true',
                        help='fold BatchNorm into convolutions for inference '
                        '(cmt_mm.utils.fuse.fuse_conv_bn)')
    parser.add_argument('--no-flops', action='store_true', help='skip counting FLOPs')
    parser.add_argument('--profile', type=int, metavar='STEPS',
                        help='after timing each cell, profile STEPS steps with torch.profiler '
                        'and print the operators that took the most time')


def settings_from_args(args: argparse.Namespace,
                       defaults: Optional[Settings] = None) -> Settings:
    """``Settings`` from the options given; the others from ``defaults``."""
    defaults = defaults or Settings()
    given = dict(device=args.device, dtypes=args.dtypes, modes=args.modes,
                 batch_sizes=args.batch_sizes, cls_size=args.cls_size,
                 det_size=tuple(args.det_size) if args.det_size else None,
                 det_infer_batch=args.det_infer_batch, det_train_batch=args.det_train_batch,
                 warmup=args.warmup, repeats=args.repeats, min_repeat_time=args.min_repeat_time,
                 with_cp=args.with_cp, compile_mode=args.compile, profile_steps=args.profile)
    settings = Settings(**{**vars(defaults), **{k: v for k, v in given.items() if v is not None}})
    settings.channels_last = args.channels_last or defaults.channels_last
    settings.fuse_bn = args.fuse_bn or defaults.fuse_bn
    settings.count_flops = not args.no_flops and defaults.count_flops
    return settings


def measure_matmul_peaks(settings: Settings, log: Callable = print) -> dict:
    """TFLOP/s of a large matmul per dtype, the reference for a model's achieved TFLOP/s."""
    device = torch.device(settings.device)
    peaks = {}
    for dtype in settings.dtypes:
        peaks[dtype] = matmul_peak_tflops(device, DTYPES[dtype])
        log(f'matmul peak {dtype}: {peaks[dtype]:.1f} TFLOP/s')
    return peaks


# ---------------------------------------------------------------------------------------------
# Environment and reports
# ---------------------------------------------------------------------------------------------


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """The hardware, the versions and the settings that change speed."""
    on_gpu = device.type == 'cuda'
    return dict(
        device=torch.cuda.get_device_name(device) if on_gpu else platform.processor() or 'cpu',
        python=platform.python_version(), torch=torch.__version__,
        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if on_gpu else None,
        **{name: _version(name) for name in ('mmcv', 'mmdet', 'mmpretrain', 'mmengine')},
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=torch.backends.cudnn.allow_tf32)


def markdown_row(cells: Sequence[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [markdown_row(header), '|' + '---|' * len(header)]
    lines += [markdown_row(row) for row in rows]
    return '\n'.join(lines)


def _number(value: Optional[float], digits: int = 1) -> str:
    return '-' if value is None else f'{value:,.{digits}f}'


def cells_table(result: dict) -> str:
    """One config's cells as a markdown table."""
    header = ['mode', 'dtype', 'batch', 'ms / step', 'images/s', 'peak MiB', 'TFLOP/s',
              '% of matmul peak']
    rows = []
    for cell in result['cells']:
        if cell['status'] != 'ok':
            rows.append([cell['mode'], cell['dtype'], str(cell['batch_size']),
                         f"{cell['status']}: {cell['message']}", '', '', '', ''])
            continue
        fraction = cell['fraction_of_matmul_peak']
        rows.append([cell['mode'], cell['dtype'], str(cell['batch_size']),
                     _number(cell['median_ms'], 2), _number(cell['images_per_s']),
                     _number(cell['peak_memory_mib'], 0), _number(cell['tflops'], 2),
                     '-' if fraction is None else f'{100 * fraction:.0f}%'])
    return markdown_table(header, rows)
