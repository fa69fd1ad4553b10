"""tools/analysis_tools/benchmark.py and benchmark_compare.py on the CPU: every path the GPU run
takes, at tiny sizes. (The CUDA clock and memory counters are only read on a GPU.)"""
import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool
from torch._dynamo.utils import counters

from cmt_mm.models import CMT
from cmt_mm.utils import benchmark as bench
from cmt_mm.utils.complexity import model_complexity

REPO = Path(__file__).resolve().parents[2]
CMT_TI = str(REPO / 'configs/cmt/cmt-ti_8xb128_in1k.py')
CPU_QUICK = dict(device='cpu', warmup=1, repeats=1, min_repeat_time=0.)


def test_time_steps_takes_the_median_of_calibrated_repeats():
    calls = []
    timing = bench.time_steps(lambda: calls.append(time.sleep(0.002)), torch.device('cpu'),
                              warmup=2, repeats=3, min_repeat_time=0.01)
    assert timing.steps >= 3  # each run lasts at least 10 ms of 2 ms steps
    assert len(calls) == 2 + 1 + 3 * timing.steps  # warm-up, calibration, runs
    assert len(timing.seconds) == 3 and timing.median >= 0.002
    assert timing.peak_memory is None


def test_graph_pool_bytes_counts_the_free_part_of_private_pools_on_the_device():
    segments = [
        dict(device=0, segment_pool_id=(0, 0), total_size=100, allocated_size=10),  # default
        dict(device=0, segment_pool_id=(0, 1), total_size=64, allocated_size=4),  # a graph's
        dict(device=0, segment_pool_id=(0, 2), total_size=32, allocated_size=0),
        dict(device=1, segment_pool_id=(0, 3), total_size=512, allocated_size=0),  # elsewhere
    ]
    assert bench.graph_pool_bytes(segments, 0) == 60 + 32
    assert bench.graph_pool_bytes(segments, 1) == 512


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_peak_memory_counts_what_cuda_graphs_replay_in():
    device = torch.device('cuda')
    x = torch.randn(4096, 4096, device=device)  # 64 MiB

    def work():
        return (x * 2).sum()  # through a 64 MiB intermediate

    eager = bench.time_steps(work, device, warmup=1, repeats=1, min_repeat_time=0)
    graph = None

    def replay():  # captured in the warm-up, as torch.compile's reduce-overhead mode does
        nonlocal graph
        if graph is None:
            work()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                graph.output = work()
        graph.replay()

    graphed = bench.time_steps(replay, device, warmup=1, repeats=1, min_repeat_time=0)
    # without the pool: x and the output only, 64 MiB less
    assert graphed.peak_memory >= eager.peak_memory - 2**20


def test_the_compared_configs_exist():
    for entry in load_tool('tools/analysis_tools/benchmark_compare.py').ENTRIES.values():
        path = entry.config if '::' in entry.config else REPO / entry.config
        assert Path(bench.resolve_config_path(str(path))).is_file(), entry.config


def test_models_are_built_without_checkpoints_and_keep_all_detections():
    cfg = bench.load_config('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    bench.drop_pretrained_init(cfg.model)
    bench.keep_all_detections(cfg.model.test_cfg)
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.test_cfg.rcnn.score_thr == 0
    node = dict(neck=dict(init_cfg=[dict(type='Pretrained', checkpoint='x.pth'),
                                    dict(type='Xavier', layer='Conv2d')]))
    bench.drop_pretrained_init(node)
    assert node['neck']['init_cfg'] == [dict(type='Xavier', layer='Conv2d')]


@pytest.mark.parametrize('size', [(96, 64), (256, 320)], ids=['dense bias', 'low-rank bias'])
def test_forward_macs_equal_the_project_counter_with_attention(size):
    # Above the learned key grid, CMT's attention runs its bias as extra query and key
    # features: executed work, not the architecture's, which the MACs count.
    model = CMT('ti').eval()
    x = torch.randn(1, 3, *size)
    expected = model_complexity(model, model, x).flops_with_attention
    assert bench.forward_macs(model, model, x) == expected


def test_classification_benchmark(tmp_path, capsys):
    out = tmp_path / 'result.json'
    load_tool('tools/analysis_tools/benchmark.py').main([
        CMT_TI, '--device', 'cpu', '--cls-size', '64', '--batch-sizes', '1', '2', '--dtypes',
        'float32', 'bfloat16', '--warmup', '1', '--repeats', '2', '--min-repeat-time', '0',
        '--channels-last', '--fuse-bn', '--modes', 'inference', '--json-out', str(out)])
    assert '| inference | bfloat16 | 2 |' in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert '--fuse-bn' in report['command'] and report['environment']['torch']
    result = report['results'][0]
    assert result['input_hw'] == [64, 64] and result['params'] == 9_492_426
    # The executed FLOPs of a forward are twice its MACs (mmengine also counts the LayerNorms).
    ratio = result['step_flops_per_image']['inference'] / (2 * result['macs_per_image'])
    assert 0.97 < ratio <= 1
    cells = result['cells']
    assert [(c['dtype'], c['batch_size']) for c in cells] == [
        ('float32', 1), ('float32', 2), ('bfloat16', 1), ('bfloat16', 2)]
    for cell in cells:
        assert cell['status'] == 'ok' and len(cell['repeats_ms']) == 2
        assert cell['images_per_s'] > 0 and cell['tflops'] > 0
        assert cell['fraction_of_matmul_peak'] > 0


def test_profile_option_lists_the_costliest_operators(capsys):
    load_tool('tools/analysis_tools/benchmark.py').main([
        CMT_TI, '--device', 'cpu', '--cls-size', '64', '--batch-sizes', '2', '--dtypes',
        'float32', '--warmup', '1', '--repeats', '1', '--min-repeat-time', '0', '--no-flops',
        '--profile', '2'])
    out = capsys.readouterr().out
    assert 'where the time of one step goes (2 steps profiled)' in out
    assert '| operator | calls / step | self GPU ms / step | self CPU ms / step |' in out
    rows = bench.profile_step(lambda: torch.randn(64, 64) @ torch.randn(64, 64),
                              torch.device('cpu'), steps=2, rows=3)
    assert len(rows) == 3 and 'aten::mm' in [row['name'] for row in rows]
    cpu_ms = [row['self_cpu_ms'] for row in rows]
    assert cpu_ms == sorted(cpu_ms, reverse=True) and cpu_ms[0] > 0
    assert rows[[row['name'] for row in rows].index('aten::mm')]['calls'] == 1


def test_classification_training_after_folded_inference():
    settings = bench.Settings(**CPU_QUICK, dtypes=('float32', 'bfloat16'), batch_sizes=(2, ),
                              cls_size=64, fuse_bn=True)
    result = bench.ConfigBenchmark(CMT_TI, settings).run()
    assert [(c['mode'], c['dtype'], c['status']) for c in result['cells']] == [
        ('inference', 'float32', 'ok'), ('inference', 'bfloat16', 'ok'),
        ('train', 'float32', 'ok'), ('train', 'bfloat16', 'unsupported')]  # AMP needs a GPU
    flops = result['step_flops_per_image']
    assert flops['train'] == 3 * flops['inference']
    train = result['cells'][2]
    assert train['images_per_s'] > 0 and train['tflops'] > 0


def test_classification_training_step_updates_the_unfused_model():
    from mmengine.config import Config

    cfg = Config.fromfile(CMT_TI)
    model = bench.build_model(cfg, torch.device('cpu'))
    data = bench.classification_batch(2, (64, 64), torch.device('cpu'), channels_last=True)
    before = model.backbone.stem[0].conv.weight.detach().clone()
    losses = model.train_step(data, bench._optim_wrapper(model, torch.float32))
    assert torch.isfinite(losses['loss']) and not torch.equal(
        before, model.backbone.stem[0].conv.weight)


def test_compile_option(monkeypatch):
    # The benchmark's torch.compile path through dynamo, without inductor's slow CPU codegen.
    compile_ = torch.compile
    monkeypatch.setattr(torch, 'compile',
                        lambda model, **kwargs: compile_(model, backend='eager', **kwargs))
    settings = bench.Settings(**CPU_QUICK, dtypes=('float32', ), batch_sizes=(1, ),
                              cls_size=64, compile_mode='default', count_flops=False,
                              modes=('inference', ))
    counters.clear()
    result = bench.ConfigBenchmark(CMT_TI, settings).run()
    assert [c['status'] for c in result['cells']] == ['ok']
    assert counters['stats']['unique_graphs'] == 1  # the classifier in one graph


@pytest.mark.filterwarnings('ignore:.*torch.cuda.amp.GradScaler.* is deprecated:FutureWarning',
                            'ignore:torch.cuda.amp.GradScaler is enabled, but CUDA:UserWarning')
def test_detection_benchmark_with_amp_training(monkeypatch):
    # mmengine's AmpOptimWrapper asserts a GPU; without the assertion it runs bfloat16 on the
    # CPU, which exercises the GPU run's AMP training path (and RoIAlign run in float32).
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    small_heads = {
        'model.train_cfg.rpn_proposal.max_per_img': 32, 'model.train_cfg.rcnn.sampler.num': 16,
        'model.test_cfg.rpn.max_per_img': 32, 'model.test_cfg.rcnn.max_per_img': 4}
    settings = bench.Settings(**CPU_QUICK, dtypes=('float32', 'bfloat16'), det_size=(96, 64))
    result = bench.ConfigBenchmark(str(REPO / 'configs/mask_rcnn_cmt_ti_1x_coco.py'), settings,
                                   small_heads).run()
    assert result['task'] == 'detection' and result['input_hw'] == [64, 96]
    assert [(c['mode'], c['dtype'], c['status']) for c in result['cells']] == [
        ('inference', 'float32', 'ok'), ('train', 'float32', 'ok'),
        ('inference', 'bfloat16', 'ok'), ('train', 'bfloat16', 'ok')]
    flops = result['step_flops_per_image']
    assert flops['train'] > flops['inference'] > 0


def test_comparison_smoke_run_writes_the_report(tmp_path):
    load_tool('tools/analysis_tools/benchmark_compare.py').main([
        '--smoke', '--models', 'cmt-ti', 'swin-t', '--dtypes', 'float32', '--no-flops',
        '--work-dir', str(tmp_path)])
    text = (tmp_path / 'comparison.md').read_text()
    assert 'Command: `python tools/analysis_tools/benchmark_compare.py --smoke' in text
    assert 'torch ' + torch.__version__ in text and 'mmpretrain 1.2.0' in text
    assert '| swin-t | 224 | 28.3 |' in text and '| 1.00x |' in text
    results = json.loads((tmp_path / 'comparison.json').read_text())['results']
    assert [c['status'] for r in results.values() for c in r['cells']] == ['ok', 'ok']


def test_report_ratios_and_checkpointing_memory():
    compare = load_tool('tools/analysis_tools/benchmark_compare.py')

    def result(task, *cells):
        return dict(task=task, input_hw=[800, 1280], params=4e7, macs_per_image=2e11,
                    cells=[dict(asdict(bench.Cell(mode, 'float16', 2)), **values)
                           for mode, values in cells])

    def train(ms, mib):
        return 'train', dict(median_ms=ms, images_per_s=2e3 / ms, peak_memory_mib=mib)

    results = {'mask_rcnn_cmt-s': result('detection', train(100., 8000.)),
               'mask_rcnn_swin-t': result('detection', train(120., 9000.)),
               'mask_rcnn_cmt-s_with-cp': result('detection', train(130., 4400.))}
    settings = bench.Settings(dtypes=('float16', ))
    detection = compare.detection_tables(results, settings)
    assert '| mask_rcnn_cmt-s | 800x1280 | 40.0 | 200.00 |' in detection
    assert '| 100.0 | 1.20x | 8,000 |' in detection  # Swin-T's step / CMT-S's step
    assert 'with-cp' not in detection
    assert compare.checkpointing_table(results, settings).splitlines()[-1] == \
        '| mask_rcnn_cmt-s | float16 | 8,000 | 4,400 | -45% | 100.0 | 130.0 |'


def test_comparison_entries_narrow_the_command_line_settings():
    compare = load_tool('tools/analysis_tools/benchmark_compare.py')
    train_only = bench.Settings(modes=('train', ), with_cp=True)
    assert compare.entry_settings('retinanet_cmt-s', train_only).modes == ('train', )
    assert compare.entry_settings('retinanet_cmt-s', train_only).with_cp is True
    no_cp = bench.Settings(modes=('inference', 'train'), with_cp=False)
    assert compare.entry_settings('mask_rcnn_cmt-s_with-cp', no_cp).with_cp is True
    assert compare.entry_settings('mask_rcnn_cmt-s_with-cp', no_cp).modes == ('train', )
    inference_only = bench.Settings(modes=('inference', ))
    assert compare.entry_settings('mask_rcnn_cmt-s_with-cp', inference_only) is None
