"""Tests for `python -m d2lfcn`, the environment check (d2lfcn/__main__.py).

Real VOC2012 and model-zoo weights are not available here: "missing" and
"corrupt" use the real checksums (VOC_SHA1, the model zoo's own sha1) against
small fake files; "present" replaces the expected sha1 by the fake file's, so
it proves the comparison and the messages, not that any real file is good.
"""
import hashlib
import importlib.metadata
import os
import subprocess
import sys

import mxnet as mx
import pytest
from mxnet.gluon.model_zoo import model_store

from d2lfcn import __main__ as envcheck
from d2lfcn.cli import run_cli
from d2lfcn.voc import VOC_SHA1, VOC_TAR

ZOO_SHA1 = model_store._model_sha1['resnet18_v2']


def sha1_of(path):
    """Hash a file with hashlib directly (not with d2lfcn.download)."""
    with open(path, 'rb') as f:
        return hashlib.sha1(f.read()).hexdigest()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def weights_path(mxnet_home, sha1=ZOO_SHA1):
    # The model zoo's naming: <name>-<first 8 hex digits of its sha1>.params
    return os.path.join(str(mxnet_home), 'models', f'resnet18_v2-{sha1[:8]}.params')


def check(tmp_path, data_dir, mxnet_home, cwd=None):
    """Run `python -m d2lfcn`; return (exit code, stdout with spaces collapsed, stderr)."""
    env = dict(os.environ, D2LFCN_DATA=str(data_dir), MXNET_HOME=str(mxnet_home))
    proc = subprocess.run([sys.executable, '-m', 'd2lfcn'], cwd=str(cwd or tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, ' '.join(proc.stdout.split()), proc.stderr


def test_missing_voc_and_corrupt_weights_still_let_the_demo_run(tmp_path):
    data, home = tmp_path / 'data', tmp_path / 'mxnet'
    weights = write(weights_path(home), b'not the resnet18_v2 weights')
    code, out, err = check(tmp_path, data, home)
    assert code == 0, err
    assert 'Traceback' not in err
    assert f'VOC2012 missing: neither {data}/VOCdevkit/VOC2012 nor {data}/{VOC_TAR} exists' in out
    assert f'copy {VOC_TAR} (about 2 GB, sha1 {VOC_SHA1}) into {data}' in out
    assert f'resnet18_v2 corrupt: {weights} has sha1 {sha1_of(weights)}, not {ZOO_SHA1}' in out
    assert '--backbone-params PATH' in out and '--no-pretrained-base' in out
    assert 'compute the FCN, hybridized, runs forward and backward: ok' in out
    installed = [n for n in ('mxnet', 'mxnet-cu112') if _installed(n)]
    assert f"(pip package {', '.join(installed)})" in out
    assert out.endswith('The demo can run: python -m d2lfcn.train --demo '
                        "The book's recipe (python -m d2lfcn.train) needs what is missing above.")


def _installed(name):
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_corrupt_voc_tar_and_missing_weights(tmp_path):
    data, home = tmp_path / 'data', tmp_path / 'mxnet'
    tar = write(data / VOC_TAR, b'not the VOC2012 tar')
    code, out, err = check(tmp_path, data, home)
    assert code == 0, err
    assert f'VOC2012 corrupt: {tar} has sha1 {sha1_of(tar)}, not {VOC_SHA1}; delete it.' in out
    assert f'resnet18_v2 missing: {weights_path(home)}.' in out
    assert f'copy resnet18_v2-{ZOO_SHA1[:8]}.params (sha1 {ZOO_SHA1}) into {home}/models' in out


def test_unwritable_data_and_run_folders_stop_with_one_line(tmp_path):
    blocker = write(tmp_path / 'a-file', b'')
    cwd = tmp_path / 'work'
    write(cwd / 'runs', b'')  # runs/demo cannot be made under a file
    code, out, err = check(tmp_path, os.path.join(blocker, 'data'), tmp_path / 'mxnet', cwd=cwd)
    assert code == 2
    assert err.count('\n') == 1 and err.startswith('error: the demo cannot run: ')
    assert f'{blocker}/data: not a writable folder' in err and '$D2LFCN_DATA' in err
    assert f'{cwd}/runs/demo: cannot write the demo run there' in err
    assert 'The demo can run' not in out


def test_present_weights_are_verified_by_sha1(tmp_path, monkeypatch):
    content = b'stand-in weights'
    fake_sha1 = hashlib.sha1(content).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, 'resnet18_v2', fake_sha1)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    path = write(weights_path(tmp_path, fake_sha1), content)
    assert envcheck.check_backbone() == (True, [f'present: {path} (sha1 verified)'])
    write(path, content + b'!')  # one byte more: the same name, another sha1
    present, lines = envcheck.check_backbone()
    assert not present and lines[0].startswith(f'corrupt: {path} has sha1 ')


def test_present_voc_tar_is_verified_by_sha1(tmp_path, monkeypatch):
    tar = write(tmp_path / VOC_TAR, b'stand-in tar')
    monkeypatch.setattr(envcheck, 'VOC_SHA1', sha1_of(tar))
    present, lines = envcheck.check_voc(str(tmp_path))
    assert present and lines[0].startswith(f'present: {tar} (sha1 verified)')
    assert 'without network' in lines[0]


def test_partial_download_is_reported(tmp_path):
    write(tmp_path / (VOC_TAR + '.part'), b'\0' * (3 * 2**20))
    present, lines = envcheck.check_voc(str(tmp_path))
    assert not present
    assert 'A partial download (3 MB) is there; python -m d2lfcn.train resumes it.' in lines


def test_extracted_tree_is_checked_file_by_file(small_voc_copy, tmp_path):
    data = os.path.dirname(os.path.dirname(small_voc_copy))  # holds VOCdevkit/VOC2012
    present, lines = envcheck.check_voc(data)
    assert present, lines
    assert lines == [f'present: {small_voc_copy}, 12 train + 8 val images, every file the '
                     'splits list exists (VOC2012 has 1464 + 1449: this is another set)']
    with open(os.path.join(small_voc_copy, 'ImageSets', 'Segmentation', 'val.txt')) as f:
        name = f.read().split()[-1]
    gone = os.path.join(small_voc_copy, 'JPEGImages', f'{name}.jpg')
    os.remove(gone)
    present, lines = envcheck.check_voc(data)
    assert not present
    assert lines[0].startswith(f'incomplete: 1 files the splits list are missing, e.g. {gone}')
    os.remove(os.path.join(small_voc_copy, 'ImageSets', 'Segmentation', 'train.txt'))
    present, lines = envcheck.check_voc(data)
    assert not present and 'train.txt' in lines[0]


def test_mxnet_failure_stops_with_one_line(tmp_path, monkeypatch, capsys):
    # Simulated: a real broken MXNet cannot be produced here on demand.
    def broken(*args, **kwargs):
        raise mx.base.MXNetError('simulated failure\nsecond line')
    monkeypatch.setattr(envcheck, 'get_fcn', broken)
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path / 'data'))
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mxnet'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(envcheck.main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    package = [n for n in ('mxnet', 'mxnet-cu112') if _installed(n)][0]
    assert err == ('error: the demo cannot run: MXNet cannot train the FCN on the CPU '
                   '(MXNetError: simulated failure); reinstall it: '
                   f'pip install --force-reinstall {package}==1.9.1\n')


def test_is_writable(tmp_path):
    blocker = write(tmp_path / 'f', b'')
    assert envcheck.is_writable(str(tmp_path))
    assert envcheck.is_writable(str(tmp_path / 'not' / 'yet'))
    assert not envcheck.is_writable(blocker)
    assert not envcheck.is_writable(os.path.join(blocker, 'below'))
