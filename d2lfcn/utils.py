"""Share small helpers: D2L's devices, timers and accumulators; errors; safe file writes.

Every idiom that more than one module needs is written once, here. Importing
this module does not import MXNet (the ONNX runtime path needs none).
"""
import contextlib
import os
import shutil
import tempfile
import time

import numpy as np

__all__ = ['UserError', 'Arg', 'Terminated', 'try_gpu', 'try_all_gpus', 'get_devices',
           'Timer', 'Accumulator', 'atomic_path', 'default_data_dir', 'is_fast_mode',
           'to_numpy']


# ------------------------------------------------------------------ errors

class Arg:
    """An argument an error message names: `lr=0.5` to a Python caller, `--lr 0.5` as a flag.

    `value` may be left out (`backbone_params`, `--backbone-params`); True and
    False name a switch (`resume=False`, `without --resume`). `flag` overrides
    the flag's spelling where it is not the parameter's name with dashes.
    """

    _NO_VALUE = object()

    def __init__(self, name, value=_NO_VALUE, flag=None):
        self.name, self.value = name, value
        self.flag = flag or '--' + name.replace('_', '-')

    def as_python(self):
        if self.value is self._NO_VALUE:
            return self.name
        return f'{self.name}={self.value!r}'

    def as_flag(self):
        if self.value is self._NO_VALUE or self.value is True:
            return self.flag
        if self.value is False:
            return f'without {self.flag}'
        if isinstance(self.value, (list, tuple)):
            return f"{self.flag} {' '.join(map(str, self.value))}"
        return f'{self.flag} {self.value}'


class UserError(Exception):
    """Signal a problem the user can fix (bad path, missing data, bad argument).

    `message` may hold `{key}` fields, each filled from `Arg` keyword
    arguments: in Python the message names parameters (`arch='fcn8s'`), and
    the commands word the same error with flags (`--arch fcn8s`), so a
    notebook user is never told to pass a flag.
    """

    def __init__(self, message, **fields):
        super().__init__(message)
        self.message, self.fields = message, fields

    def render(self, as_flags=False):
        text = self.message
        for key, value in self.fields.items():  # str.replace: paths may hold braces
            if isinstance(value, Arg):
                value = value.as_flag() if as_flags else value.as_python()
            text = text.replace('{' + key + '}', str(value))
        return text

    def __str__(self):
        return self.render()


class Terminated(BaseException):
    """Signal that the process received SIGTERM (what `kill` and schedulers send)."""


def exit_line(error):
    """Return the one line and exit code a command ends with for `error`."""
    if isinstance(error, UserError):
        return f'error: {error.render(as_flags=True)}', 2
    if isinstance(error, Terminated):
        return 'terminated', 143
    return 'interrupted', 130  # KeyboardInterrupt


def first_line(error, limit=200):
    """Return why `error` happened in one short line: its OS reason or its message's first line."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    reason = getattr(error, 'reason', None)  # urllib's URLError wraps the real error
    if isinstance(reason, BaseException):
        return first_line(reason, limit)
    lines = [' '.join(line.split()) for line in str(reason or error).splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0].startswith('Traceback'):
        lines = lines[-1:]  # MXNet puts its C++ stack first and the reason last
    text = lines[0] if lines else type(error).__name__
    if text.startswith('MXNetError: '):
        text = text[len('MXNetError: '):]
    # MXNet's messages start with a C++ location ("[12:00:00] src/...: "); drop it.
    if text.startswith('[') and '] ' in text:
        text = text.split('] ', 1)[1]
    return text[:limit]


def why_write_failed(error):
    """Say in a few words why saving a file failed (OSError or MXNet's write error)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    # MXNet reports a full disk as an incomplete write, without errno.
    return ('the disk is full or the write failed' if 'Write' in str(error)
            else first_line(error, 100))


# ----------------------------------------------------------------- devices

def try_gpu(i=0):
    """Return gpu(i) if it exists, otherwise cpu()."""
    import mxnet as mx
    if mx.context.num_gpus() >= i + 1:
        return mx.gpu(i)
    return mx.cpu()


def try_all_gpus():
    """Return all available GPUs, or [cpu()] if there is none."""
    import mxnet as mx
    devices = [mx.gpu(i) for i in range(mx.context.num_gpus())]
    return devices if devices else [mx.cpu()]


def get_devices(gpus=None, cpus=None):
    """Return the contexts to run on: GPU ids `gpus` ('0,1'), `cpus` CPU contexts, or try_all_gpus()."""
    import mxnet as mx
    if cpus:
        return [mx.cpu(i) for i in range(cpus)]
    if gpus is None:
        return try_all_gpus()
    try:
        ids = [int(i) for i in str(gpus).split(',') if i.strip()]
    except ValueError:
        raise UserError('{gpus}: expected comma-separated GPU ids, e.g. 0,1',
                        gpus=Arg('gpus', gpus)) from None
    count = mx.context.num_gpus()
    if not ids or any(not 0 <= i < count for i in ids):
        raise UserError(f'{{gpus}}: MXNet sees {count} GPU(s); leave out {{gpus_}} '
                        'to use the CPU', gpus=Arg('gpus', gpus), gpus_=Arg('gpus'))
    return [mx.gpu(i) for i in ids]


# ------------------------------------------------------ timers, accumulators

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


def to_numpy(x):
    """Return `x` (NDArray, numpy array or list) as a numpy array."""
    return x.asnumpy() if hasattr(x, 'asnumpy') else np.asarray(x)


# ------------------------------------------------------------------ files

def existing_parent(path):
    """Return the nearest folder at or above `path` that exists (absolute)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def topmost_missing(path):
    """Return the highest folder that creating `path` would create, or None if it exists."""
    path = os.path.abspath(path)
    parent = existing_parent(path)
    if parent == path:
        return None
    while os.path.dirname(path) != parent:
        path = os.path.dirname(path)
    return path


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
    created = topmost_missing(folder)
    os.makedirs(folder, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise


def read_text(path, what, hint):
    """Return a UTF-8 text file's text (a BOM allowed), or raise UserError naming it.

    `what` names the file in a read error; `hint` says how to fix bad bytes.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise UserError(f'{path}: cannot read {what} ({e.strerror})') from None
    try:
        return data.decode('utf-8-sig')  # -sig: Notepad's BOM
    except UnicodeDecodeError as e:
        raise UserError(f'{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset '
                        f'{e.start}); {hint}') from None


def check_out_dir(path, name='out_dir'):
    """Refuse an output folder that is a file or cannot be written, before any work.

    `name` is the parameter (and flag) that gave the folder, for the message.
    """
    path = os.fspath(path)
    arg = Arg(name, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError('{arg}: is a file, not a folder', arg=arg)
    try:
        fd, tmp = tempfile.mkstemp(prefix='.write-test', dir=existing_parent(path))
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise UserError(f'{{arg}}: cannot write there ({e.strerror}); choose another '
                        '{other}', arg=arg, other=Arg(name)) from None


def check_mxnet_path(path, name):
    """Refuse a path MXNet cannot open: its C API takes file names as UTF-8."""
    try:
        os.fsencode(path).decode('utf-8')
    except UnicodeDecodeError:
        raise UserError('{arg}: MXNet reads and writes only paths that are valid '
                        'UTF-8; rename the file or folder',
                        arg=Arg(name, os.fsencode(path))) from None


def default_data_dir():
    """Return the folder datasets live in: $D2LFCN_DATA or ~/.d2lfcn/data."""
    return os.environ.get('D2LFCN_DATA',
                          os.path.join(os.path.expanduser('~'), '.d2lfcn', 'data'))


def is_fast_mode():
    """Return True when D2LFCN_FAST=1 asks chapters and figures for small sizes."""
    return os.environ.get('D2LFCN_FAST', '0') not in ('', '0')
