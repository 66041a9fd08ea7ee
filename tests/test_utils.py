"""Tests for d2lfcn.utils: atomic writes, one-line CLI errors, accumulators."""
import os
import stat

import pytest
from mxnet import nd

from d2lfcn.cli import ArgumentParser, run_cli
from d2lfcn.utils import Accumulator, UserError, atomic_path, default_data_dir


def test_atomic_path_renames_on_success_with_the_extension_kept(tmp_path):
    target = tmp_path / 'sub' / 'weights.params'
    with atomic_path(target) as tmp:
        assert tmp.endswith('.params') and os.path.dirname(tmp) == str(target.parent)
        assert not target.exists()
        with open(tmp, 'w') as f:
            f.write('new')
    assert target.read_text() == 'new'
    assert os.listdir(target.parent) == ['weights.params']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~umask


def test_atomic_path_leaves_the_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / 'metrics.csv'
    target.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('crash mid-write')
    assert target.read_text() == 'old'
    assert os.listdir(tmp_path) == ['metrics.csv']


def test_accumulator_adds_numbers_and_one_element_ndarrays():
    acc = Accumulator(3)
    acc.add(1, 2.5, nd.array([4.0]).sum())
    acc.add(nd.array([0.5]), 0, 1)
    assert acc.data == [1.5, 2.5, 5.0]
    acc.reset()
    assert acc[0] == acc[1] == acc[2] == 0.0


def test_cli_errors_are_one_line_and_exit_2(capsys):
    def main(argv):
        p = ArgumentParser(prog='python -m d2lfcn.x')
        p.add_argument('--n', type=int, required=True)
        args = p.parse_args(argv)
        if args.n < 0:
            raise UserError('--n -1: must not be negative')
        return args.n

    assert run_cli(main, ['--n', '3']) == 3
    for argv, message in ((['--n', 'x'], "argument --n: invalid int value: 'x'"),
                          (['--n', '-1'], '--n -1: must not be negative'),
                          ([], 'the following arguments are required: --n')):
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv)
        err = capsys.readouterr().err
        assert e.value.code == 2
        assert err.count('\n') == 1 and err.startswith('error: ') and message in err


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path))
    assert default_data_dir() == str(tmp_path)
    monkeypatch.delenv('D2LFCN_DATA')
    assert default_data_dir() == os.path.join(os.path.expanduser('~'), '.d2lfcn', 'data')


def test_sigterm_stops_a_command_but_kills_its_forked_children_as_before():
    """A DataLoader worker must die of SIGTERM; its pool stops it that way."""
    import signal
    import subprocess
    import sys
    code = '''
import os, signal, sys, time
from d2lfcn.cli import run_cli

def main(argv):
    pid = os.fork()
    if pid == 0:                      # a worker: SIGTERM kills it at once
        time.sleep(60)
        os._exit(0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the command itself: one line, exit 143
    time.sleep(5)

run_cli(main)
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout == f'{-signal.SIGTERM}\n'
    assert (proc.returncode, proc.stderr) == (143, 'terminated\n')


def test_errors_name_parameters_in_python_and_flags_on_the_command_line(capsys):
    from d2lfcn.utils import Arg, exit_line
    e = UserError('params file x.params holds an fcn16s; pass {fix}, or {scratch} with '
                  '{crop} ({path})', fix=Arg('arch', 'fcn16s'),
                  scratch=Arg('pretrained_base', False, flag='--no-pretrained-base'),
                  crop=Arg('crop_size', [320, 480]), path='a {fix} b')
    assert str(e) == ("params file x.params holds an fcn16s; pass arch='fcn16s', or "
                      "pretrained_base=False with crop_size=[320, 480] (a {fix} b)")
    assert exit_line(e) == ('error: params file x.params holds an fcn16s; pass --arch '
                            'fcn16s, or without --no-pretrained-base with --crop-size 320 '
                            '480 (a {fix} b)', 2)
    assert Arg('resume', True).as_flag() == '--resume'
    assert Arg('out_dir').as_python() == 'out_dir'

    def main(argv):
        raise UserError('{arg}: out of range', arg=Arg('num_epochs', 0))

    with pytest.raises(SystemExit) as info:
        run_cli(main, [])
    assert info.value.code == 2
    assert capsys.readouterr().err == 'error: --num-epochs 0: out of range\n'


def test_first_line_says_why_in_one_short_line():
    from d2lfcn.utils import first_line
    import urllib.error
    assert first_line(FileNotFoundError(2, 'No such file or directory')) == \
        'No such file or directory'
    assert first_line(ValueError('\n  first   line \nsecond')) == 'first line'
    # MXNet's C++ location prefix goes.
    assert first_line(RuntimeError('[12:00:00] src/io.cc:12: Check failed: x\nStack')) == \
        'src/io.cc:12: Check failed: x'
    assert first_line(KeyError()) == 'KeyError'
    # MXNet's stack comes first, its reason last.
    stack = ('Traceback (most recent call last):\n  File "../src/ndarray/ndarray.cc", '
             'line 1858\nMXNetError: Check failed: header == magic: Invalid NDArray file')
    assert first_line(RuntimeError(stack)) == 'Check failed: header == magic: Invalid NDArray file'
    refused = urllib.error.URLError(ConnectionRefusedError(111, 'Connection refused'))
    assert first_line(refused) == 'Connection refused'
    assert first_line(ValueError('x' * 300), 10) == 'x' * 10


def test_existing_parent_and_topmost_missing(tmp_path):
    from d2lfcn.utils import existing_parent, topmost_missing
    deep = tmp_path / 'a' / 'b' / 'c'
    assert existing_parent(deep) == str(tmp_path)
    assert topmost_missing(deep) == str(tmp_path / 'a')
    assert topmost_missing(tmp_path) is None
    (tmp_path / 'a').mkdir()
    assert existing_parent(deep) == str(tmp_path / 'a')
    assert topmost_missing(deep) == str(tmp_path / 'a' / 'b')
