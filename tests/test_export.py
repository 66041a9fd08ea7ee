"""Test exporting a trained FCN: SymbolBlock round trips and the export CLI."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from d2lfcn.deploy import export_fcn
from d2lfcn.export import main
from d2lfcn.model import get_fcn
from d2lfcn.cli import run_cli

ARCHS = ['fcn32s', 'fcn16s', 'fcn8s']


def _random_net(arch, num_classes=3, seed=0):
    """Return a randomly initialised arch whose every layer matters to the output."""
    mx.random.seed(seed)
    net = get_fcn(num_classes, pretrained_base=False, arch=arch)
    rng = np.random.RandomState(seed)
    for name in ('score16', 'score8'):  # zero at initialisation: make them count
        if hasattr(net, name):
            w = getattr(net, name).weight
            w.set_data(nd.array(0.05 * rng.randn(*w.shape)))
    with autograd.record():  # move BatchNorm's running statistics off 0 and 1
        net(nd.random.normal(1, 2, shape=(2, 3, 64, 64)))
    return net


def _imports(symbol_file, params_file):
    return gluon.SymbolBlock.imports(symbol_file, ['data'], params_file)


@pytest.mark.parametrize('arch', ARCHS)
def test_exported_graph_predicts_like_the_network(tmp_path, arch):
    net = _random_net(arch)
    x = {s: nd.random.normal(shape=s) for s in [(2, 3, 64, 96), (1, 3, 96, 32)]}
    expected = {s: net(v).asnumpy() for s, v in x.items()}  # imperative, before export
    params_file, symbol_file = export_fcn(net, str(tmp_path / 'out'), arch, 64, 96)
    assert sorted(os.listdir(tmp_path / 'out')) == [f'{arch}-0000.params',
                                                   f'{arch}-symbol.json']
    assert symbol_file == str(tmp_path / 'out' / f'{arch}-symbol.json')
    loaded = _imports(symbol_file, params_file)
    for s, v in x.items():  # the export size, and another multiple of 32
        got = loaded(v).asnumpy()
        assert got.shape == (s[0], 3) + s[2:]
        np.testing.assert_allclose(got, expected[s], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got.argmax(axis=1), expected[s].argmax(axis=1))
    # Every parameter, BatchNorm's running statistics included, went into the file.
    saved = nd.load(params_file)
    assert len(saved) == len(net.collect_params().keys())


def test_a_failed_export_leaves_the_out_dir_as_it_was(tmp_path, monkeypatch):
    net = _random_net('fcn16s')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'fcn16s-symbol.json').write_text('an earlier export')

    def half_then_fail(path, epoch=0, **kwargs):
        with open(f'{path}-symbol.json', 'w') as f:
            f.write('{"half')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(net, 'export', half_then_fail)
    with pytest.raises(OSError):
        export_fcn(net, str(out), 'fcn16s', 64, 64)
    assert os.listdir(out) == ['fcn16s-symbol.json']
    assert (out / 'fcn16s-symbol.json').read_text() == 'an earlier export'
    with pytest.raises(OSError):
        export_fcn(net, str(tmp_path / 'new'), 'fcn16s', 64, 64)
    assert not (tmp_path / 'new').exists()


# ------------------------------------------------------------------ the CLI

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A training run's folder: an fcn16s with 3 classes."""
    folder = tmp_path_factory.mktemp('run')
    net = _random_net('fcn16s', seed=1)
    net.save_parameters(str(folder / 'best.params'))
    return net, folder


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, run_dir):
    net, folder = run_dir
    out = tmp_path / 'deploy'
    proc = subprocess.run(
        [sys.executable, '-m', 'd2lfcn.export', '--params', str(folder / 'best.params'),
         '--out-dir', str(out), '--height', '64', '--width', '64'],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # arch and classes came from the weights; the prefix defaults to the arch.
    assert sorted(os.listdir(out)) == ['fcn16s-0000.params', 'fcn16s-symbol.json']
    assert str(out / 'fcn16s-symbol.json') in proc.stdout
    loaded = _imports(str(out / 'fcn16s-symbol.json'), str(out / 'fcn16s-0000.params'))
    x = nd.random.normal(shape=(1, 3, 64, 128))
    np.testing.assert_allclose(loaded(x).asnumpy(), net(x).asnumpy(), rtol=1e-4, atol=1e-5)


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    return e.value.code, capsys.readouterr().err


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, run_dir, capsys):
    _, folder = run_dir
    params = str(folder / 'best.params')
    corrupt = tmp_path / 'corrupt.params'
    corrupt.write_bytes(os.urandom(200))
    a_file = tmp_path / 'file'
    a_file.write_text('')
    out = str(tmp_path / 'out')
    cases = [
        (['--params', str(tmp_path / 'none.params')], 'does not exist'),
        (['--params', str(corrupt)], 'corrupt'),
        (['--params', params, '--arch', 'fcn8s'], 'holds an fcn16s, not an fcn8s; '
                                                  'pass --arch fcn16s'),
        (['--params', params, '--num-classes', '21'], 'is for 3 classes, not 21; '
                                                      'pass --num-classes 3'),
        (['--params', params, '--height', '100'], '--height 100: must be a positive '
                                                  'multiple of 32'),
        (['--params', params, '--arch', 'fcn4s'], "invalid choice: 'fcn4s'"),
        (['--params', params, '--prefix', 'a/b'], '--prefix'),
    ]
    for argv, message in cases:
        code, err = _run(argv + ['--out-dir', out], capsys)
        assert code == 2, argv
        assert len(err.splitlines()) == 1 and err.startswith('error: ') and message in err
    assert not os.path.exists(out)
    code, err = _run(['--params', params, '--out-dir', str(a_file)], capsys)
    assert code == 2 and err == f'error: --out-dir {a_file}: is a file, not a folder\n'
    code, err = _run(['--out-dir', out], capsys)
    assert code == 2 and '--params' in err and len(err.splitlines()) == 1


def test_cli_help_explains_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    for flag in ('--params', '--out-dir', '--arch', '--num-classes', '--height',
                 '--width', '--prefix'):
        assert flag in text
    for default in ('(required)', '(default: the one they hold)', '21 for VOC)',
                    '(default: 320)', '(default: 480)', '(default: the arch',
                    "SymbolBlock.imports"):
        assert default in text
