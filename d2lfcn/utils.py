"""Share devices, timers, accumulators, atomic writes and CLI error handling."""
import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import mxnet as mx
import numpy as np

__all__ = ['UserError', 'Terminated', 'ArgumentParser', 'run_cli', 'try_gpu',
           'try_all_gpus', 'Timer', 'Accumulator', 'atomic_path', 'default_data_dir', 'is_fast_mode', 'to_numpy']


class UserError(Exception):
    """Signal a problem the user can fix (bad path, missing data, bad flag)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every d2lfcn error."""

    def error(self, message):
        raise UserError(f'{message} (see {self.prog} --help)')


class Terminated(BaseException):
    """Signal that the process received SIGTERM (what `kill` and schedulers send)."""


def _raise_terminated(signum, frame):
    raise Terminated


def _default_sigterm():
    # A forked child (a DataLoader worker) must die of SIGTERM as before: its
    # pool stops it that way, and Python code run at that moment could deadlock.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_default_sigterm)


def run_cli(main, argv=None):
    """Run `main(argv)`; a `UserError` becomes one line on stderr and exit 2.

    SIGTERM stops the command like Ctrl-C does: `finally` blocks and atomic
    writes clean up, and the exit code is 143 (130 for Ctrl-C).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    # A file name that is not valid UTF-8 must not turn a report into a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')
    try:
        return main(argv)
    except UserError as e:
        sys.stderr.write(f'error: {e}\n')
        raise SystemExit(2)
    except KeyboardInterrupt:
        sys.stderr.write('interrupted\n')
        raise SystemExit(130)
    except Terminated:
        sys.stderr.write('terminated\n')
        raise SystemExit(143)


def try_gpu(i=0):
    """Return gpu(i) if it exists, otherwise cpu()."""
    if mx.context.num_gpus() >= i + 1:
        return mx.gpu(i)
    return mx.cpu()


def try_all_gpus():
    """Return all available GPUs, or [cpu()] if there is none."""
    devices = [mx.gpu(i) for i in range(mx.context.num_gpus())]
    return devices if devices else [mx.cpu()]


class Timer:
    """Record multiple running times."""

    def __init__(self):
        self.times = []
        self.start()

    def start(self):
        self.tik = time.time()

    def stop(self):
        self.times.append(time.time() - self.tik)
        return self.times[-1]

    def avg(self):
        return sum(self.times) / len(self.times)

    def sum(self):
        return sum(self.times)

    def cumsum(self):
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """Accumulate sums over n variables."""

    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + _to_float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def _to_float(x):
    # float() refuses an NDArray in MXNet 1.9, even a one-element one.
    return float(x.asscalar()) if hasattr(x, 'asscalar') else float(x)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it over `path` on success.

    A crash or exception leaves `path` untouched and removes the temporary file,
    so readers never see a half-written file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    # Keep the extension: cv2.imwrite and savefig pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.tmp', suffix=ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def removed_on_error(folder):
    """Create `folder` (and missing parents); remove what was created if the block fails."""
    top = os.path.abspath(folder)
    while not os.path.exists(os.path.dirname(top)):
        top = os.path.dirname(top)
    created = None if os.path.isdir(folder) else top
    os.makedirs(folder, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise


def check_out_dir(path, flag='--out-dir'):
    """Refuse an output folder that is a file or cannot be written, before any work."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f'{flag} {path}: is a file, not a folder')
    probe = os.path.abspath(path)
    while not os.path.exists(probe):  # the folder that would hold what we create
        probe = os.path.dirname(probe)
    try:
        fd, tmp = tempfile.mkstemp(prefix='.write-test', dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise UserError(f'{flag} {path}: cannot write there ({e.strerror}); '
                        f'choose another {flag}') from None


def check_mxnet_path(path, flag):
    """Refuse a path MXNet cannot open: its C API takes file names as UTF-8."""
    try:
        os.fsencode(path).decode('utf-8')
    except UnicodeDecodeError:
        raise UserError(f'{flag} {os.fsencode(path)!r}: MXNet reads and writes only '
                        'paths that are valid UTF-8; rename the file or folder') from None


def default_data_dir():
    """Return the folder datasets live in: $D2LFCN_DATA or ~/.d2lfcn/data."""
    return os.environ.get('D2LFCN_DATA',
                          os.path.join(os.path.expanduser('~'), '.d2lfcn', 'data'))


def is_fast_mode():
    """Return True when D2LFCN_FAST=1 asks chapters and figures for small sizes."""
    return os.environ.get('D2LFCN_FAST', '0') not in ('', '0')


def to_numpy(x):
    """Return `x` (NDArray, numpy array or list) as a numpy array."""
    return x.asnumpy() if isinstance(x, mx.nd.NDArray) else np.asarray(x)
