"""Run a command: flags parsed by argparse, every error one line with its exit code.

The commands (`python -m d2lfcn.train`, ...) share this plumbing; the
library never imports it.
"""
import argparse
import os
import signal
import sys
import threading

from .utils import Terminated, UserError, exit_line

__all__ = ['ArgumentParser', 'run_cli']


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every d2lfcn error."""

    def error(self, message):
        raise UserError(f'{message} (see {self.prog} --help)')


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

    The line names flags where the library's message names parameters.
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
    except (UserError, KeyboardInterrupt, Terminated) as e:
        line, code = exit_line(e)
        sys.stderr.write(line + '\n')
        raise SystemExit(code)
