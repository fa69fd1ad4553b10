"""Train a model from an mmdet or mmpretrain config (the config's ``default_scope`` decides).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
                                 [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
                                 [--launcher {none,pytorch,slurm,mpi}] [--compile [MODE]]
                                 [--cuda-graph]

Multi-process: ``tools/dist_train.sh CONFIG NUM_PROCS`` (torchrun) or ``tools/slurm_train.sh``.

Mistakes in the command line (missing files, unknown ``--cfg-options`` keys, a dataset or
pretrained checkpoint that is not where the config says, a checkpoint that does not fit the
model, or on ``--resume`` the optimizer, a config value a component refuses, ...) end with a
one-line message and exit status 2.
``tools/test.py`` reuses the helpers of this file.
"""
import argparse
import contextlib
import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import os.path as osp
import sys
import traceback
from typing import Optional

EXIT_USAGE = 2  # wrong command line, like argparse
EXIT_ENVIRONMENT = 1  # broken installation or untrusted checkpoint
# load_from may leave this fraction of the model's weights unloaded: a classifier layer re-sized
# for fine-tuning on other classes (RetinaNet's is ~10% of a CMT-Ti RetinaNet).
LOAD_FROM_MAX_UNLOADED = 0.2
# torch.optim.Optimizer.load_state_dict's errors for a state of other parameter groups
OPTIMIZER_STATE_MISMATCH = (
    'loaded state dict has a different number of parameter groups',
    "loaded state dict contains a parameter group that doesn't match the size of optimizer's "
    'group')

# Runs from a source checkout without installing cmt_mm.
_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if importlib.util.find_spec('cmt_mm') is None:
    sys.path.insert(0, _REPO_ROOT)


class UserError(Exception):
    """A mistake in the command line; reported as one line, without a traceback."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by train.py and test.py."""
    from mmengine.config import DictAction

    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: the config\'s work_dir, else work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. optim_wrapper.optimizer.lr=0.01 or '
        'train_dataloader.batch_size=8; every dotted key must exist in the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument(
        '--compile', nargs='?', const='default', metavar='MODE',
        help='torch.compile the backbone and neck (cmt_mm.CompileHook, with the config\'s '
        'compile_options) in MODE (default, reduce-overhead, max-autotune, ...); the first '
        'iterations take longer')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector or classifier')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='auto|PATH',
        help='resume from PATH, or with no value (or "auto") from the latest '
        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training (needs a GPU)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default='float16',
                        help='the low precision of --amp. bfloat16 cannot overflow, but '
                        'mmcv 2.1\'s detection ops (RoIAlign, sigmoid focal loss) lack it')
    parser.add_argument(
        '--cuda-graph', action='store_true',
        help='replay the backbone\'s training forward and backward as CUDA graphs '
        '(cmt_mm.CUDAGraphHook; one GPU, training batches of one shape)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the real total batch size')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


# ---------------------------------------------------------------------------------------
# Helpers shared with tools/test.py
# ---------------------------------------------------------------------------------------


def require_file(path: str, what: str) -> None:
    """Local files must exist; URLs (``scheme://``) are left to mmengine's loaders."""
    if '://' not in path and not osp.isfile(path):
        raise UserError(f'{what} not found: {path}')


def load_config(path: str, cfg_options: Optional[dict] = None):
    """Load a config, apply ``--cfg-options``, then prepare the environment for its task.

    Command-line mistakes are found before anything heavy is imported. ``custom_imports``
    are imported only after the compatibility fixes, which must precede
    ``mmpretrain.models``/``mmdet.models``.
    """
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from cmt_mm.utils.compat import setup_environment

    require_file(path, 'config file')
    cfg = Config.fromfile(path, import_custom_modules=False)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        replace_none_parents(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)

    setup_environment(detection=is_detection(cfg))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    # cmt_mm registers its backbone on import; it may not exist in every checkout.
    if importlib.util.find_spec('cmt_mm.models') is not None:
        importlib.import_module('cmt_mm.models')
    return cfg


def is_detection(cfg) -> bool:
    model_type = str((cfg.get('model') or {}).get('type', ''))
    return cfg.get('default_scope') == 'mmdet' or model_type.startswith('mmdet.')


def _runner_keys() -> set:
    """Top-level keys the Runner reads, so --cfg-options may add them when absent."""
    from mmengine.runner import Runner
    params = set(inspect.signature(Runner.__init__).parameters) - {'self', 'cfg'}
    return params | {'model_wrapper_cfg', 'find_unused_parameters', 'runner_type', 'compile'}


def check_cfg_options(cfg, options: dict) -> None:
    """Refuse dotted keys that do not exist in the config.

    ``Config.merge_from_dict`` silently adds unknown keys, so a typo such as
    ``optim_wrapper.optimizer.lrr=0.1`` would train with the old value. Allowed besides
    existing keys: a new top-level key the Runner reads (``randomness.seed=0``), keys
    below a value that is ``None`` (they create the dict), and list indices.
    """
    runner_keys = _runner_keys()
    tree = cfg.to_dict()
    for key in options:
        node, walked = tree, []
        for part in key.split('.'):
            where = '.'.join(walked) or 'the config'
            if node is None:
                break  # a None value is being replaced by a dict
            if isinstance(node, dict):
                if part not in node:
                    if not walked and part in runner_keys:
                        break
                    close = difflib.get_close_matches(part, [str(k) for k in node], n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ''
                    raise UserError(f"--cfg-options key '{key}' does not exist in the "
                                    f"config: {where} has no key '{part}'{hint}")
                node = node[part]
            elif isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--cfg-options key '{key}': {where} is a list of "
                                    f"{len(node)} items, '{part}' is not an index into it")
                node = node[int(part)]
            else:
                raise UserError(f"--cfg-options key '{key}': {where} is the "
                                f'{type(node).__name__} {node!r}, not a dict')
            walked.append(part)


def replace_none_parents(cfg, options: dict) -> None:
    """Turn a ``None`` on the way to a ``--cfg-options`` key into the dict the key fills.

    ``merge_from_dict`` refuses to merge a dict into ``None``, so without this
    ``model.backbone.init_cfg.checkpoint=PATH`` fails on ``init_cfg=None``.
    """
    for key in options:
        node = cfg
        for part in key.split('.')[:-1]:
            if isinstance(node, list):
                part = int(part)
            elif part not in node:
                break  # a new key: merge_from_dict creates it
            if node[part] is None:
                node[part] = {}
            node = node[part]


def check_data(cfg, phases) -> None:
    """Name a missing dataset path in one line, before the datasets are built.

    Args:
        phases: Which ``<phase>_dataloader``/``<phase>_evaluator`` the command uses.
    """
    from cmt_mm.utils.dataset_check import DatasetNotFoundError, check_data_exists
    try:
        check_data_exists(cfg, phases)
    except DatasetNotFoundError as err:
        raise UserError(str(err)) from None


def apply_common_args(cfg, args, config_path: str) -> None:
    """--work-dir, --launcher and --compile, the same way for train and test."""
    # Priority: --work-dir, then the config's work_dir, then work_dirs/<config name>.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])

    cfg.launcher = args.launcher
    if args.launcher != 'none':
        use_cpu_distributed_if_no_gpu(cfg)
    if args.compile:
        # The config says how its model compiles best (cmt_mm.CompileHook's arguments).
        options = dict(cfg.get('compile_options') or {}, mode=args.compile)
        cfg.custom_hooks = [*cfg.get('custom_hooks', []),
                            dict(type='cmt_mm.CompileHook', **options)]


def use_cpu_distributed_if_no_gpu(cfg) -> None:
    """Without CUDA, run DDP over gloo on CPU modules.

    NCCL needs GPUs, and mmengine passes ``device_ids=[LOCAL_RANK]`` to DDP, which DDP
    rejects for CPU modules; explicit config values override that default.
    """
    import torch
    if torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg):
    """Build the Runner; a config value that a component refuses is a UserError."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    with config_errors_as_user_errors():
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)


@contextlib.contextmanager
def config_errors_as_user_errors():
    """A config value that a component refuses is a UserError: while the Runner is built, and
    in ``train()`` / ``test()``, which build the optimizer, the schedulers and the loops."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as err:
        message = refused_config_message(err)
        if message is None:
            raise
        raise UserError(message) from None


def refused_config_message(err: Exception) -> Optional[str]:
    """A one-line message if ``err`` is the registry refusing a config entry, else None.

    Config mistakes surface while mmengine's ``build_from_cfg`` builds an object: it raises
    itself for an unknown ``type`` or an argument the class does not take, and the constructor
    it calls raises ValueError or TypeError for a value it rejects. Other exception types, and
    anything raised outside a registry build, are bugs whose traceback must show.
    """
    from mmengine.registry.build_functions import build_from_cfg
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    builds = [frame for frame in frames if frame.f_code is build_from_cfg.__code__]
    if not builds:
        return None
    raised_by_registry = frames[-1] is builds[-1]
    if not (raised_by_registry or isinstance(err, (TypeError, ValueError))):
        return None
    built = builds[-1].f_locals.get('obj_cls')  # unset when the type itself is unknown
    where = f' for {built.__name__}' if hasattr(built, '__name__') else ''
    # str() of a KeyError is the repr of its message.
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return f'invalid config{where}: {message}'


@contextlib.contextmanager
def checkpoint_errors_as_user_errors():
    """A checkpoint that cannot be read or does not fit the model (or, resumed, the optimizer)
    is the user's mistake."""
    from cmt_mm.utils.checkpoint import CheckpointError
    try:
        yield
    except CheckpointError as err:
        raise UserError(str(err)) from None
    except ValueError as err:
        if not str(err).startswith(OPTIMIZER_STATE_MISMATCH):
            raise
        raise UserError(
            f'--resume: the checkpoint\'s optimizer state does not fit the optimizer of the '
            f'config ({err}): it was saved with other parameter groups. A checkpoint saved with '
            'mmengine\'s one group per parameter (before the configs had '
            'cmt_mm.MergedGroupsOptimWrapperConstructor) resumes with --cfg-options '
            'optim_wrapper.constructor=DefaultOptimWrapperConstructor; or start from its weights '
            'alone with --cfg-options load_from=PATH instead of --resume') from None


def check_checkpoint_fits(runner, path: str, shapes: dict, max_unloaded: float = 0.) -> None:
    """Compare a checkpoint read by ``read_model_checkpoint`` with the runner's model."""
    from mmengine.model import is_model_wrapper

    from cmt_mm.utils.checkpoint import check_model_weights
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    check_model_weights(model, shapes, path, max_unloaded)


def close_distributed() -> None:
    """End a distributed process after its finished run: tear down the process group the
    Runner set up, then exit at once.

    mmengine never destroys the group; left alive, gloo's threads are still running at exit and
    a process can abort ('terminate called without an active exception') after a finished run,
    which torchrun reports as a failed job. The barrier first: rank 0 hosts the rendezvous
    store, which the other ranks must not lose while tearing down. Even so a rank aborted once
    more in CI after a complete two-process run (torch 2.14, gloo), in the interpreter's
    finalisation, where C++ threads of the backend or its store are destroyed. The run is over
    and saved, so after the teardown the process flushes its logs and output and exits with 0
    without that finalisation. Outside distributed runs this does nothing.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``, turning expected failures into one line on stderr."""
    from cmt_mm.utils.compat import EnvironmentProblem, UntrustedCheckpointError
    from cmt_mm.utils.training_errors import TrainingDivergedError

    prog = osp.basename(sys.argv[0])
    try:
        main(argv)
    except UserError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    except (EnvironmentProblem, UntrustedCheckpointError) as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return EXIT_ENVIRONMENT
    except TrainingDivergedError as err:  # no usage error, but its message says it all
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def enable_amp(cfg, dtype: str = 'float16') -> None:
    import torch
    if not cfg.get('optim_wrapper'):
        raise UserError('--amp needs an optim_wrapper in the config')
    optim_type = str(cfg.optim_wrapper.get('type', 'OptimWrapper'))
    if optim_type.endswith('AmpOptimWrapper'):
        return  # already on in the config
    if optim_type.split('.')[-1] != 'OptimWrapper':
        raise UserError(f'--amp works with optim_wrapper type OptimWrapper, but the '
                        f'config uses {optim_type}')
    if not torch.cuda.is_available():
        raise UserError('--amp needs a GPU (mmengine\'s AmpOptimWrapper does not run '
                        'on CPU); drop --amp')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.dtype = dtype
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_cuda_graph(cfg) -> None:
    import torch
    if not torch.cuda.is_available():
        raise UserError('--cuda-graph needs a GPU (CUDA graphs); drop --cuda-graph')
    if cfg.launcher != 'none':
        raise UserError('--cuda-graph graphs the model of one process; it does not support '
                        f'--launcher {cfg.launcher}')
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='cmt_mm.CUDAGraphHook')]


def check_optimizer_type(cfg) -> None:
    """An unknown ``optim_wrapper.optimizer.type`` fails now, in one line.

    mmengine's optimizer constructor looks the type up itself, outside a registry build, and
    fails on the missing class with 'None is not a callable object'.
    """
    from mmengine.registry import OPTIMIZERS, DefaultScope
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    name = optimizer.get('type')
    if not isinstance(name, str):
        return  # no optimizer (test-only configs) or a class given directly
    scope = cfg.get('default_scope')
    with DefaultScope.overwrite_default_scope(scope), \
            OPTIMIZERS.switch_scope_and_registry(scope) as registry:
        if registry.get(name) is not None:
            return
        known = {}  # lower case -> name, for suggestions whatever the case
        while registry is not None:
            known.update((key.lower(), key) for key in registry.module_dict)
            registry = registry.parent
    close = [known[key] for key in
             difflib.get_close_matches(name.split('.')[-1].lower(), known, n=3)]
    hint = f'did you mean {" or ".join(close)}?' if close else \
        "use a torch.optim class (e.g. 'AdamW', 'SGD') or register your own in OPTIMIZERS"
    raise UserError(f'invalid config: optim_wrapper.optimizer.type {name!r} is not a known '
                    f'optimizer; {hint}')


def check_pretrained_checkpoints(cfg) -> None:
    """Missing ``init_cfg`` checkpoints fail now, not inside ``runner.train()``.

    mmengine loads them after building the datasets and the model, and its traceback
    neither names the config key nor says how to get the file.
    """
    from cmt_mm.utils.checkpoint import missing_pretrained_checkpoints
    for key, path, module_type in missing_pretrained_checkpoints(cfg.get('model')):
        init_key = key[:-len('.checkpoint')]
        fixes = [f'point the config at it with --cfg-options {key}=PATH',
                 f'train from scratch with --cfg-options {init_key}=None']
        if module_type.split('.')[-1] == 'CMT':
            fixes.insert(0, "convert the authors' ImageNet checkpoint with python "
                         f'tools/model_converters/cmt_to_mm.py RELEASED.pth {path}')
        raise UserError(f'pretrained checkpoint not found: {path} (set by {key}); '
                        + ', or '.join(fixes))


def checkpoint_to_load(cfg) -> Optional[tuple]:
    """The checkpoint that training starts from, read as the Runner will, or None.

    Returns:
        ``(path, tensor shapes, the fraction of the model's weights it may leave unloaded)``.
        Resuming needs every weight; ``load_from`` tolerates re-sized classifier layers.
    """
    from mmengine.runner import find_latest_checkpoint

    from cmt_mm.utils.checkpoint import read_model_checkpoint
    if cfg.get('resume'):
        path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
        if path is None:
            return None  # --resume auto without a checkpoint starts afresh
        return path, read_model_checkpoint(path, resume=True), 0.
    if cfg.get('load_from'):
        return cfg.load_from, read_model_checkpoint(cfg.load_from), LOAD_FROM_MAX_UNLOADED
    return None


def uses_validation(cfg) -> bool:
    """The Runner builds a validation loop only when val_dataloader and val_cfg are set."""
    return cfg.get('val_dataloader') is not None and cfg.get('val_cfg') is not None


def main(argv=None) -> None:
    args = parse_args(argv)
    require_file(args.config, 'config file')
    if args.resume not in (None, 'auto'):
        require_file(args.resume, 'checkpoint to resume from')
    cfg = load_config(args.config, args.cfg_options)
    apply_common_args(cfg, args, args.config)

    if args.amp:
        enable_amp(cfg, args.amp_dtype)
    if args.cuda_graph:
        if args.compile:
            raise UserError('--cuda-graph and --compile do not combine; choose one')
        enable_cuda_graph(cfg)

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr') or {}
        if 'base_batch_size' not in scale_cfg:
            raise UserError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) '
                            'in the config (the batch size the learning rate is for)')
        cfg.auto_scale_lr = dict(scale_cfg, enable=True)

    # --resume: 'auto' finds the latest checkpoint in the work dir (none: start fresh).
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    check_optimizer_type(cfg)
    check_data(cfg, ['train', 'val'] if uses_validation(cfg) else ['train'])
    check_pretrained_checkpoints(cfg)
    with checkpoint_errors_as_user_errors():
        # The Runner loads non-strictly and only after building the datasets: read it now.
        to_load = checkpoint_to_load(cfg)
        runner = build_runner(cfg)
        if to_load is not None:
            check_checkpoint_fits(runner, *to_load)
        with config_errors_as_user_errors():
            runner.train()  # also loads the init_cfg checkpoints
    close_distributed()


if __name__ == '__main__':
    sys.exit(run_cli(main))
