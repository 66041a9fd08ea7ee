"""Keep a training run's folder: flags, checkpoints, metrics and what resume reads.

A run folder (`out_dir`, the train command's --out-dir) holds:

- `state.json`: the epoch reached, the history, the best epoch, the run's
  options and the checkpoint files with their sha1; resuming reads only this;
- `checkpoints/RUN-eNNNN.params` and `.states`: the latest epoch's weights and
  trainer states, and the best epoch's weights;
- `last.params`, `last.states`, `best.params`: the same files under stable
  names (hard links), for `predict`, `export` and people;
- `args.json` (the resolved flags), `classes.json` (the class names and
  their colours, which predict and export read beside best.params),
  `split.json` (a split d2lfcn drew for a dataset folder without train.txt
  and val.txt), `metrics.csv`, `curves.png`, `predictions.png`, and `.lock`
  while a run is using the folder.

Saving an epoch writes its files under new names, then replaces state.json
atomically, then updates the stable names and removes what is no longer
named: whatever stops the process, state.json names one complete epoch.
This docstring and `RunFolder`'s methods are the protocol's documentation;
chapters/training-at-scale.md shows resuming, README.md the guarantees.
"""
import contextlib
import csv
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import threading
import time

from .download import file_sha1
from .utils import Arg, Terminated, UserError, atomic_path, topmost_missing

__all__ = ['FILES', 'METRIC_COLUMNS', 'RunFolder', 'read_args', 'read_classes_beside',
           'write_json',
           'write_metrics', 'interrupts_deferred', 'new_run_id']

FILES = dict(args='args.json', state='state.json', last='last.params',
             states='last.states', best='best.params', metrics='metrics.csv',
             curves='curves.png', predictions='predictions.png',
             examples='examples.json', lock='.lock', checkpoints='checkpoints',
             classes='classes.json', split='split.json')

METRIC_COLUMNS = ['epoch', 'loss', 'train_acc', 'test_acc', 'test_miou',
                  'test_mean_acc', 'test_fw_iou', 'whole_acc', 'whole_miou',
                  'whole_mean_acc', 'whole_fw_iou', 'lr', 'seconds']

# The arguments a failed resume names.
_RESUME = dict(resume=Arg('resume', True), fresh=Arg('resume', False), out_dir=Arg('out_dir'))

# Per-epoch numbers a state.json row must hold, and of what type.
_ROW_NUMBERS = ('loss', 'train_acc', 'test_acc', 'test_miou')


def write_json(path, obj):
    """Write `obj` as JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write('\n')


def read_args(out_dir):
    """Return the flags saved in a run folder's args.json, or {} if it has none."""
    try:
        with open(os.path.join(out_dir, FILES['args'])) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def read_classes_beside(params, num_classes):
    """Return (class names, palette) from the classes.json beside a weights file.

    Without one, a network of 21 classes is VOC's, and any other has
    numbered classes; VOC's palette colours them either way.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(params)), FILES['classes'])
    if not os.path.exists(path):
        from .segmaps import voc_palette
        from .voc import VOC_CLASSES
        names = (list(VOC_CLASSES) if num_classes == len(VOC_CLASSES)
                 else [f'class {i}' for i in range(num_classes)])
        return names, voc_palette()[:num_classes].tolist()
    try:
        with open(path) as f:
            saved = json.load(f)
        names, palette = saved['names'], saved['palette']
        if not (len(names) == len(palette) == num_classes):
            raise ValueError(f'{len(names)} names for {num_classes} classes')
        return [str(n) for n in names], [[int(v) for v in c] for c in palette]
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e) or type(e).__name__
        raise UserError(f'{path}: does not name the {num_classes} classes of {params} '
                        f'({why}); remove it to use numbered classes') from None


def _crash_point(name, epoch):
    """Signal this process if $D2LFCN_KILL_AT names this point (for crash tests).

    tests/test_runfolder.py stops real runs between two writes with
    D2LFCN_KILL_AT=POINT:EPOCH[:SIGNAL] (SIGKILL unless a signal is named).
    """
    wanted = os.environ.get('D2LFCN_KILL_AT', '').split(':')
    if wanted[:2] == [name, str(epoch)]:
        os.kill(os.getpid(), getattr(signal, wanted[2] if len(wanted) > 2 else 'SIGKILL'))


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C and SIGTERM until the block ends, so a save completes first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda s, _: received.append(s))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGTERM in received:
        raise Terminated
    if received:
        raise KeyboardInterrupt


def _link(src, dst):
    """Make `dst` name the file `src` atomically (a hard link, else a copy)."""
    with atomic_path(dst) as tmp:
        os.remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(src, tmp)


def _is_temp(name):
    # atomic_path's temporary files: .<stem>.tmp<random><ext>
    return name.startswith('.') and '.tmp' in name


class RunFolder:
    """A training run's output folder: lock it, resume from it, save epochs into it.

    In a distributed run only rank 0 keeps the folder (`num_workers` tells
    which `worker-RANK/` folders belong to the run).
    Explained in chapters/training-at-scale.md.
    """

    def __init__(self, out_dir, num_workers=1):
        self.out_dir = os.fspath(out_dir)
        self.num_workers = num_workers
        self.fresh = True     # False once resume() has read a previous epoch
        self._lock_file = None
        self._created = None  # the topmost folder lock() had to create
        self._saved = False   # has this run written a checkpoint yet?

    def path(self, key):
        return os.path.join(self.out_dir, FILES.get(key, key))

    # ---------------------------------------------------------------- lock

    def lock(self):
        """Take the folder for this process, or raise UserError naming the holder.

        The lock is a POSIX record lock on `.lock`, released by the kernel
        however the process ends, and not inherited by forked children (such as
        DataLoader workers, which could outlive a killed run); so a killed run
        never leaves the folder locked.
        """
        try:
            self._created = topmost_missing(self.out_dir)
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError as e:
            raise UserError(f'{{arg}}: cannot create it ({e.strerror})',
                            arg=Arg('out_dir', self.out_dir)) from None
        path = self.path('lock')
        while True:
            try:
                f = open(path, 'a+')
            except OSError as e:
                raise UserError(f'{{arg}}: cannot write there ({e.strerror}); choose '
                                'another {other}', arg=Arg('out_dir', self.out_dir),
                                other=Arg('out_dir')) from None
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                f.seek(0)
                holder = f.read().strip() or 'unknown'
                f.close()
                raise UserError(f'{{arg}}: another training run (PID {holder}) is '
                                'using it; wait for it to end, or choose another '
                                '{other}', arg=Arg('out_dir', self.out_dir),
                                other=Arg('out_dir')) from None
            # A run that ended may have removed the file we opened: retry on the new one.
            if os.path.exists(path) and os.path.samestat(os.fstat(f.fileno()),
                                                         os.stat(path)):
                break
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f'{os.getpid()}\n')
        f.flush()
        self._lock_file = f
        self._clean_debris()

    def unlock(self):
        """Release the folder; remove it again if this run made it and saved nothing."""
        if self._lock_file is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path('lock'))
        self._lock_file.close()
        self._lock_file = None
        if self._created and not self._saved:
            shutil.rmtree(self._created, ignore_errors=True)

    def _clean_debris(self):
        """Remove temporary files that a killed process left mid-write."""
        for folder in (self.out_dir, self.path('checkpoints')):
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):
                    if _is_temp(name):
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(folder, name))
        # Checkpoint files the last state.json does not name: a save that died.
        state = self._peek_state()
        if state is not None:
            self._remove_unnamed_checkpoints(state)

    # --------------------------------------------------------------- resume

    def _peek_state(self):
        try:
            with open(self.path('state')) as f:
                state = json.load(f)
            return state if isinstance(state, dict) else None
        except (OSError, ValueError):
            return None

    def read_state(self):
        """Return the saved run after checking state.json and its checkpoint files."""
        path = self.path('state')
        if not os.path.isfile(path):
            raise UserError(f'{{resume}}: {path} does not exist; train {{fresh}} first, '
                            'or point {out_dir} at a previous run', **_RESUME)
        try:
            with open(path) as f:
                state = json.load(f)
            _check_state(state)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e) or 'not JSON'
            raise UserError(f'{{resume}}: {path} is damaged ({why}); start afresh '
                            '{fresh}', **_RESUME) from None
        for name, digest in state['files'].items():
            fname = os.path.join(self.out_dir, name)
            if not os.path.isfile(fname) or file_sha1(fname) != digest:
                raise UserError(f'{{resume}}: {fname} is missing or does not belong to '
                                f"epoch {state['epoch']} recorded in {path}; start "
                                'afresh {fresh}', **_RESUME)
        if self._lock_file is not None:
            self._publish(state)  # a run killed right after its last switch
        self.fresh = False
        return state

    def checkpoint_files(self, state):
        """Return the (params, trainer states) files of the epoch `state` names."""
        ckpt = state.get('checkpoint') or dict(params=FILES['last'],
                                               states=FILES['states'])
        return (os.path.join(self.out_dir, ckpt['params']),
                os.path.join(self.out_dir, ckpt['states']))

    # ----------------------------------------------------------------- save

    def save_epoch(self, net, trainer, state, history, args, is_best):
        """Save one epoch so that the folder always holds one complete epoch.

        `state` holds epoch, best_miou, best_epoch and whatever else resume
        needs; `history` is the list of epoch records; `args` the run's flags.
        """
        epoch = state['epoch']
        run_id = state['run_id']
        previous = {} if self.fresh else self._peek_state() or {}
        folder = self.path('checkpoints')
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(FILES['checkpoints'], f'{run_id}-e{epoch:04d}')
        ckpt = dict(params=stem + '.params', states=stem + '.states')
        for key, save in (('params', net.save_parameters), ('states', trainer.save_states)):
            with atomic_path(os.path.join(self.out_dir, ckpt[key])) as tmp:
                save(tmp)
            _crash_point(key, epoch)
        old = previous.get('checkpoint') if previous.get('run_id') == run_id else None
        ckpt['best'] = ckpt['params'] if is_best else (old or {}).get('best')
        files = {ckpt[k]: file_sha1(os.path.join(self.out_dir, ckpt[k]))
                 for k in ('params', 'states')}
        state = dict(state, checkpoint=ckpt, files=files, history=history, args=args)
        write_json(self.path('state'), state)  # the switch: one atomic rename
        _crash_point('state', epoch)
        self._saved = True
        self._publish(state)
        _crash_point('publish', epoch)
        self._remove_unnamed_checkpoints(state)
        if self.fresh:
            self._remove_previous_run(state)
            self.fresh = False

    def _publish(self, state):
        """Point the stable names at the files `state` names; rewrite its summaries."""
        ckpt = state.get('checkpoint')
        if ckpt is None:
            return  # a folder from before checkpoints/: its files are the stable ones
        for key, role in (('last', 'params'), ('states', 'states'), ('best', 'best')):
            if ckpt.get(role):
                src = os.path.join(self.out_dir, ckpt[role])
                if not os.path.exists(self.path(key)) or not os.path.samefile(
                        src, self.path(key)):
                    _link(src, self.path(key))
        write_json(self.path('args'), state['args'])
        for key in ('classes', 'split'):
            if state.get(key):
                write_json(self.path(key), state[key])
        write_metrics(self.path('metrics'), state['history'])

    def _remove_unnamed_checkpoints(self, state):
        ckpt = state.get('checkpoint') or {}
        keep = {os.path.basename(p) for p in ckpt.values() if p}
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path('checkpoints')):
                if name not in keep:
                    os.remove(os.path.join(self.path('checkpoints'), name))

    def _remove_previous_run(self, state):
        """After a fresh run's first save, remove what only the old run wrote."""
        stale = ['curves', 'predictions'] + [key for key in ('classes', 'split')
                                             if not state.get(key)]
        stale += [] if state['checkpoint']['best'] else ['best']
        for key in stale:
            with contextlib.suppress(OSError):
                os.remove(self.path(key))
        ours = {f'worker-{r}' for r in range(self.num_workers)} if self.num_workers > 1 else set()
        with contextlib.suppress(OSError):
            for name in os.listdir(self.out_dir):
                if name.startswith('worker-') and name not in ours:
                    shutil.rmtree(os.path.join(self.out_dir, name), ignore_errors=True)

    def write_figure(self, key, fig):
        """Save a figure (curves, predictions) into the folder."""
        from .plotting import save_figure
        save_figure(fig, self.path(key), tight=False)


def write_metrics(path, history):
    """Write the epoch records as metrics.csv, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, METRIC_COLUMNS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(history)


def _check_state(state):
    """Raise ValueError unless `state` is a state.json this package could have written."""
    def need(ok, what):
        if not ok:
            raise ValueError(what)
    need(isinstance(state, dict), 'not a JSON object')
    epoch = state.get('epoch')
    need(isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1,
         f'epoch {epoch!r} is not a positive integer')
    files = state.get('files')
    need(isinstance(files, dict) and files and all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()),
        'no checkpoint files listed')
    for name in files:
        need(not os.path.isabs(name) and '..' not in name.split('/'),
             f'file {name!r} lies outside the folder')
    history = state.get('history')
    need(isinstance(history, list) and len(history) == epoch,
         f'history does not hold {epoch} epochs')
    for i, row in enumerate(history):
        need(isinstance(row, dict) and row.get('epoch') == i + 1 and all(
            isinstance(row.get(k), (int, float)) for k in _ROW_NUMBERS),
            f'history row {i + 1} lacks numbers')
    best = state.get('best_miou')
    need(isinstance(best, (int, float)) and (math.isnan(best) or -1 <= best <= 1),
         f'best_miou {best!r} is not a score')
    need(isinstance(state.get('best_epoch'), int), 'best_epoch is not an integer')
    ckpt = state.get('checkpoint')
    if ckpt is not None:
        need(isinstance(ckpt, dict) and ckpt.get('params') in files
             and ckpt.get('states') in files, 'checkpoint names unlisted files')


def new_run_id():
    """Return a short id, unique per fresh run, for checkpoint file names."""
    return f'{int(time.time()):x}{os.getpid() % 4096:03x}'
