"""Run a d2lfcn command in a forked child of the test process, as `python -m` would.

A fresh `python -m d2lfcn.train` spends 2-3 s importing MXNet and d2lfcn.
The test process has imported them once; a forked child starts warm and runs
the module as `__main__` (exactly what `python -m` does), with file
descriptors 1 and 2 redirected to files, so C-level output and crashes are
seen as a user would see them. `Forked` has the part of Popen's interface the
tests use (poll, kill, communicate, returncode); `run_forked` runs one
command to its end.

MXNet's engine re-creates its threads in a forked child; its OpenMP thread
count is the parent's (MXNet read OMP_NUM_THREADS when the parent imported it).
"""
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

import d2lfcn.export  # noqa: F401  (imported here once, so every child starts warm)
import d2lfcn.predict  # noqa: F401
import d2lfcn.train  # noqa: F401
import matplotlib.backends.backend_agg  # noqa: F401  (the run folder's figures)
import matplotlib.figure  # noqa: F401
from d2lfcn.cli import run_cli

TIMEOUT = 300  # seconds; a hung command fails its test instead of hanging the suite


def _child(argv, env, in_child, cwd, out_fd, err_fd):
    """Run one command in this forked process; never return."""
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        # The streams a `python -m` process would have, in this locale.
        sys.stdout = open(1, 'w', encoding=sys.__stdout__.encoding,
                          errors=sys.__stdout__.errors, closefd=False)
        sys.stderr = open(2, 'w', encoding=sys.__stderr__.encoding,
                          errors=sys.__stderr__.errors, closefd=False)
        os.chdir(cwd)
        os.environ.update(env)
        for fn in in_child:
            fn()
        try:
            if callable(argv[0]):
                run_cli(lambda _: argv[0](*argv[1:]))
            else:
                sys.argv = list(argv)
                sys.modules.pop(argv[0], None)  # run it afresh as __main__, like -m
                runpy.run_module(argv[0], run_name='__main__', alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                sys.stderr.write(f'{e.code}\n')
        except BaseException:  # what the interpreter would print
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Forked:
    """A command (module name and flags, or a function and its arguments) in a forked child."""

    def __init__(self, argv, env=None, in_child=(), cwd='.'):
        self.argv, self.returncode = argv, None
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _child(argv, env or {}, in_child, cwd, self._out.fileno(), self._err.fileno())

    def poll(self):
        """Return the exit code (negative for a signal), or None while running."""
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout=TIMEOUT):
        """Wait for the end; return (stdout, stderr). Kill it and raise after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                os.waitpid(self.pid, 0)
                raise TimeoutError(f'{self.argv[0]} did not finish within {timeout} s')
            time.sleep(0.01)
        outputs = []
        for f in (self._out, self._err):
            f.seek(0)
            outputs.append(f.read().decode('utf-8', 'backslashreplace'))
            f.close()
        return tuple(outputs)


def run_forked(argv, env=None, in_child=(), cwd='.'):
    """Run argv in a forked child to its end; return (exit code, stdout, stderr)."""
    proc = Forked(argv, env, in_child, cwd)
    out, err = proc.communicate()
    return proc.returncode, out, err
