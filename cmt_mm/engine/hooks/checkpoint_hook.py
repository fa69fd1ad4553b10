"""Checkpoints that a kill at any moment leaves complete."""
import glob
import os
import os.path as osp
from typing import List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook

from cmt_mm.registry import HOOKS

PARTIAL_SUFFIX = '.partial'
ATOMIC_BACKEND = 'cmt_mm_atomic_local'


def atomic_write(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``.

    The bytes go to a temporary file in the same folder (a rename is atomic only within one
    file system), are flushed to the disk, and the file is then renamed over ``path``.
    """
    folder = osp.dirname(osp.abspath(path))
    partial = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}{PARTIAL_SUFFIX}')
    try:
        with open(partial, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise
    # The rename is durable only once the folder's entry is on the disk too.
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def remove_partial_files(folder: str) -> List[str]:
    """Delete what :func:`atomic_write` left in ``folder`` when its process was killed."""
    leftovers = glob.glob(osp.join(folder, f'.*{PARTIAL_SUFFIX}'))
    for path in leftovers:
        os.remove(path)
    return leftovers


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (see :func:`atomic_write`)."""

    def put(self, obj: bytes, filepath) -> None:
        os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, except that a kill never leaves a corrupt latest checkpoint.

    mmengine writes ``epoch_N.pth``/``iter_N.pth`` in place, then ``last_checkpoint`` (the file
    ``--resume auto`` reads), and with ``max_keep_ckpts`` it deletes the oldest checkpoint
    *before* writing the new one. A kill while it writes leaves a truncated checkpoint under its
    final name and, with ``max_keep_ckpts=1``, no complete checkpoint at all: ``last_checkpoint``
    names the deleted one. Here:

    - every file (checkpoint and ``last_checkpoint``) is written to a temporary file in the same
      folder, synced and renamed over its name, so it is either the old or the complete new file;
    - ``last_checkpoint`` names the new checkpoint only once it is complete, and outdated
      checkpoints are deleted only after that; so ``last_checkpoint`` always names a complete
      checkpoint;
    - temporary files left by a killed save are deleted when training starts.

    Same arguments as mmengine's hook. Only local folders get atomic writes; for others
    (``out_dir='s3://...'``, ``file_client_args``) it works as mmengine's hook.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.atomic = self.file_client_args is None and type(self.file_backend) is LocalBackend
        if not self.atomic:
            return
        self.backend_args = dict(backend=ATOMIC_BACKEND)
        self.file_backend = get_file_backend(self.out_dir, backend_args=self.backend_args)
        if is_main_process():
            for folder in {self.out_dir, runner.work_dir}:
                for path in remove_partial_files(folder):
                    runner.logger.info(f'Deleted {path}, left by a save that was interrupted.')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self.atomic:
            return super()._save_checkpoint_with_step(runner, step, meta)

        outdated = self._update_kept_steps(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        self.file_backend.put_text(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        for path in outdated:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # DeepSpeed saves folders
                self.file_backend.rmtree(path)

    def _update_kept_steps(self, runner, step) -> List[str]:
        """Record ``step`` among the kept checkpoints; return those to delete after saving.

        The list is updated before saving because the checkpoint stores it (a resumed run
        deletes the right files).
        """
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []  # nothing to delete, or this step was recorded by another save
        outdated = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated.append(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft())))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated
