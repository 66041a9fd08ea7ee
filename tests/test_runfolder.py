"""Test the run folder: resume after any crash, one run at a time, nothing stale.

Real `python -m d2lfcn.train` processes (forked from this one, warm: see
tests/forkrun.py) are stopped at chosen points of an epoch's save
($D2LFCN_KILL_AT, the test hook in d2lfcn.runfolder) and at varying moments
with SIGKILL, and resumed; every resumed run must end with the losses of an
uninterrupted one.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd
from mxnet.gluon import nn

from d2lfcn.download import file_sha1
from d2lfcn.model import get_fcn
from d2lfcn.runfolder import RunFolder
from d2lfcn.loop import SegmentationLoss, train_batch

from forkrun import Forked, run_forked  # tests/forkrun.py

TINY = ['--no-pretrained-base', '--crop-size', '64', '64', '--batch-size', '4',
        '--num-workers', '0', '--momentum', '0.9', '--lr-schedule', 'poly']
EPOCHS = 3


def _train(voc_dir, out, *extra, env=None, wait=True):
    """Start (or run to its end) a training process; return it."""
    argv = ['d2lfcn.train', '--data-dir', voc_dir, '--out-dir', str(out),
            '--num-epochs', str(EPOCHS), *TINY, *extra]
    proc = Forked(argv, env)
    if wait:
        proc.out, proc.err = proc.communicate()
    return proc


def _losses(out):
    with open(os.path.join(out, 'metrics.csv')) as f:
        return [float(r['loss']) for r in csv.DictReader(f)]


def _snapshot(folder):
    """Return {relative path: bytes} of every file under `folder` but the lock."""
    folder = str(folder)
    return {os.path.relpath(os.path.join(d, f), folder):
            open(os.path.join(d, f), 'rb').read()
            for d, _, files in os.walk(folder) for f in files if f != '.lock'}


def _assert_tidy(out):
    """state.json's files and the stable names agree; no temporary or stray file."""
    with open(os.path.join(out, 'state.json')) as f:
        state = json.load(f)
    for name, digest in state['files'].items():
        assert file_sha1(os.path.join(out, name)) == digest
    ckpt = state['checkpoint']
    assert os.path.samefile(os.path.join(out, 'last.params'), os.path.join(out, ckpt['params']))
    assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == sorted(
        {os.path.basename(p) for p in ckpt.values() if p})
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(out) for f in files
                 if f.startswith('.')]
    assert leftovers == []


@pytest.fixture(scope='module')
def uninterrupted(small_voc_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('full') / 'out'
    proc = _train(small_voc_dir, out)
    assert proc.returncode == 0, proc.err
    return _losses(out)


@pytest.mark.slow
@pytest.mark.parametrize('point', ['params', 'states', 'state', 'publish'])
def test_killed_between_two_writes_resumes_to_the_same_losses(point, small_voc_dir,
                                                              tmp_path, uninterrupted):
    out = tmp_path / 'out'
    proc = _train(small_voc_dir, out, env={'D2LFCN_KILL_AT': f'{point}:2'})
    assert proc.returncode == -signal.SIGKILL
    with open(out / 'state.json') as f:
        saved = json.load(f)['epoch']
    assert saved == (2 if point in ('state', 'publish') else 1)
    proc = _train(small_voc_dir, out, '--resume')
    assert proc.returncode == 0, proc.err
    assert f'resuming {out} after epoch {saved}' in proc.out
    np.testing.assert_allclose(_losses(out), uninterrupted, rtol=1e-4)
    _assert_tidy(out)


def _kill_during_a_save(proc, out, delay):
    """SIGKILL `proc` `delay` seconds after epoch 2's save starts writing."""
    ckpt = out / 'checkpoints'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        names = os.listdir(ckpt) if ckpt.is_dir() else []
        if any('-e0002' in n for n in names):
            time.sleep(delay)
            proc.kill()
            break
        time.sleep(0.002)
    proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize('delay', [0.0, 0.1, 0.3])
def test_sigkill_at_varying_moments_of_a_save_resumes(delay, small_voc_dir, tmp_path,
                                                      uninterrupted):
    out = tmp_path / 'out'
    proc = _train(small_voc_dir, out, wait=False)
    _kill_during_a_save(proc, out, delay)
    with open(out / 'state.json') as f:
        assert json.load(f)['epoch'] in (1, 2)
    proc = _train(small_voc_dir, out, '--resume')
    assert proc.returncode == 0, proc.err
    np.testing.assert_allclose(_losses(out), uninterrupted, rtol=1e-4)
    _assert_tidy(out)


@pytest.mark.slow
def test_sigterm_during_a_save_completes_it_then_stops(small_voc_dir, tmp_path,
                                                       uninterrupted):
    out = tmp_path / 'out'
    proc = _train(small_voc_dir, out, env={'D2LFCN_KILL_AT': 'params:2:SIGTERM'})
    assert (proc.returncode, proc.err) == (143, 'terminated\n')
    with open(out / 'state.json') as f:
        assert json.load(f)['epoch'] == 2  # the save it interrupted was completed
    _assert_tidy(out)
    proc = _train(small_voc_dir, out, '--resume')
    assert proc.returncode == 0, proc.err
    np.testing.assert_allclose(_losses(out), uninterrupted, rtol=1e-4)


@pytest.mark.slow
def test_one_run_at_a_time_and_a_killed_holder_frees_the_folder(small_voc_dir, tmp_path):
    out = tmp_path / 'out'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; from d2lfcn.runfolder import RunFolder; '
         'f = RunFolder(sys.argv[1]); f.lock(); print("locked", flush=True); time.sleep(600)',
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'
        proc = _train(small_voc_dir, out)
        assert proc.returncode == 2
        assert proc.err == (f'error: --out-dir {out}: another training run (PID '
                            f'{holder.pid}) is using it; wait for it to end, or choose '
                            'another --out-dir\n')
    finally:
        holder.kill()
        holder.wait()
    proc = _train(small_voc_dir, out, '--num-epochs', '1')
    assert proc.returncode == 0, proc.err
    assert not (out / '.lock').exists()


@pytest.mark.slow
def test_a_new_run_replaces_the_old_only_once_it_has_an_epoch(small_voc_dir, tmp_path):
    out = tmp_path / 'out'
    assert _train(small_voc_dir, out, '--num-epochs', '1', '--arch', 'fcn16s').returncode == 0
    (out / 'worker-3').mkdir()  # as if a distributed run had used the folder before
    (out / 'worker-3' / 'last.params').write_bytes(b'old')
    before = _snapshot(out)
    # A fresh run (other flags) killed before its first save changes nothing ...
    proc = _train(small_voc_dir, out, '--num-epochs', '2',
                  env={'D2LFCN_KILL_AT': 'states:1'})
    assert proc.returncode == -signal.SIGKILL
    # ... (the next process clears its half-written checkpoint) ...
    holder = RunFolder(str(out))
    holder.lock()
    holder.unlock()
    assert _snapshot(out) == before
    # ... and the old run still resumes, after which a fresh run takes over.
    proc = _train(small_voc_dir, out, '--num-epochs', '2', '--arch', 'fcn16s', '--resume')
    assert proc.returncode == 0, proc.err
    proc = _train(small_voc_dir, out, '--num-epochs', '1', '--seed', '3')
    assert proc.returncode == 0, proc.err
    _assert_tidy(out)
    assert not (out / 'worker-3').exists()
    with open(out / 'args.json') as f:
        assert json.load(f)['seed'] == 3
    assert len(_losses(out)) == 1
    assert 'score16.weight' not in nd.load(str(out / 'best.params'))  # the new fcn32s


@pytest.mark.slow
def test_stale_temporary_files_are_removed_by_the_next_run(small_voc_dir, tmp_path):
    out = tmp_path / 'out'
    assert _train(small_voc_dir, out, '--num-epochs', '1').returncode == 0
    (out / '.last.tmpab12cd.params').write_bytes(b'x' * 1000)
    (out / 'checkpoints' / '.0123-e0002.tmpxyz.params').write_bytes(b'x')
    (out / 'checkpoints' / '0123-e0002.params').write_bytes(b'x')  # never switched to
    proc = _train(small_voc_dir, out, '--num-epochs', '2', '--resume')
    assert proc.returncode == 0, proc.err
    _assert_tidy(out)


@pytest.mark.slow
def test_damaged_state_json_is_one_line(small_voc_dir, tmp_path):
    out = tmp_path / 'out'
    assert _train(small_voc_dir, out, '--num-epochs', '1').returncode == 0
    good = json.loads((out / 'state.json').read_text())
    damages = [
        ('no history', lambda s: s.pop('history')),
        ('negative epoch', lambda s: s.update(epoch=-1)),
        ('string epoch', lambda s: s.update(epoch='1')),
        ('row without loss', lambda s: s['history'][0].pop('loss')),
        ('string score', lambda s: s.update(best_miou='high')),
        ('file outside', lambda s: s.update(files={'../x.params': 'ab'})),
    ]
    for what, damage in damages:
        state = json.loads(json.dumps(good))
        damage(state)
        (out / 'state.json').write_text(json.dumps(state))
        before = _snapshot(out)
        proc = _train(small_voc_dir, out, '--resume')
        assert proc.returncode == 2, what
        assert proc.err.startswith(f'error: --resume: {out / "state.json"} is damaged ('), what
        assert proc.err.count('\n') == 1 and proc.err.endswith(
            'start afresh without --resume\n'), what
        assert _snapshot(out) == before, what


@pytest.mark.slow
def test_a_folder_written_before_checkpoints_resumes_predicts_and_exports(small_voc_dir,
                                                                          tmp_path):
    """The layout of d2lfcn 0.1 before checkpoints/: last.*, best.params, state.json."""
    out = tmp_path / 'old'
    out.mkdir()
    mx.random.seed(0)
    net = get_fcn(pretrained_base=False)
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.1, 'wd': 1e-3, 'momentum': 0.9})
    X, y = nd.random.normal(shape=(4, 3, 64, 64)), nd.zeros((4, 64, 64))
    train_batch(net, X, y, SegmentationLoss(), trainer, [mx.cpu()])
    net.save_parameters(str(out / 'last.params'))
    net.save_parameters(str(out / 'best.params'))
    trainer.save_states(str(out / 'last.states'))
    row = dict(epoch=1, loss=2.0, train_acc=0.5, test_acc=0.5, test_miou=0.1,
               test_mean_acc=0.2, test_fw_iou=0.3, lr=0.1, seconds=1.0)
    (out / 'state.json').write_text(json.dumps(dict(
        epoch=1, history=[row], best_miou=0.1, best_epoch=1, baseline={}, arch='fcn32s',
        files={'last.params': file_sha1(str(out / 'last.params')),
               'last.states': file_sha1(str(out / 'last.states'))})))
    (out / 'args.json').write_text(json.dumps({'arch': 'fcn32s', 'seed': 0}))
    best = (out / 'best.params').read_bytes()
    proc = _train(small_voc_dir, out, '--num-epochs', '2', '--resume')
    assert proc.returncode == 0, proc.err
    assert f'resuming {out} after epoch 1' in proc.out
    assert len(_losses(out)) == 2
    _assert_tidy(out)
    # best.params is the old file, or epoch 2's weights if they scored better.
    ckpt = json.loads((out / 'state.json').read_text())['checkpoint']
    assert ((out / 'best.params').read_bytes() == best and not ckpt['best']) or \
        os.path.samefile(out / 'best.params', out / ckpt['best'])
    for command in (['d2lfcn.predict', os.path.join(small_voc_dir, 'JPEGImages',
                                                    'synth_000000.jpg')],
                    ['d2lfcn.export']):
        code, _, err = run_forked([*command, '--params', str(out / 'best.params'),
                                   '--out-dir', str(tmp_path / 'o')])
        assert code == 0, err



@pytest.mark.slow
def test_a_bad_image_met_mid_run_leaves_the_previous_run_whole(small_voc_dir,
                                                               small_voc_copy, tmp_path):
    """A fresh run that fails in its first epoch must not cost the old run anything."""
    from PIL import Image
    out = tmp_path / 'out'
    assert _train(small_voc_dir, out, '--num-epochs', '1').returncode == 0
    before = _snapshot(out)
    # A truncated PNG under a .jpg name: its header passes the upfront check.
    with open(os.path.join(small_voc_copy, 'ImageSets', 'Segmentation', 'train.txt')) as f:
        name = f.read().split()[0]
    jpg = os.path.join(small_voc_copy, 'JPEGImages', name + '.jpg')
    with Image.open(jpg) as im:
        im.save(jpg + '.png')
    data = open(jpg + '.png', 'rb').read()
    os.remove(jpg + '.png')
    with open(jpg, 'wb') as f:
        f.write(data[:len(data) // 2])
    proc = _train(small_voc_copy, out, '--num-epochs', '2', '--seed', '7')
    assert proc.returncode == 2 and proc.err.count('\n') == 1, proc.err
    assert name in proc.err
    assert _snapshot(out) == before
    proc = _train(small_voc_dir, out, '--num-epochs', '2', '--resume')
    assert proc.returncode == 0, proc.err


# --- the folder itself, in this process ---------------------------------------

def _row(epoch, miou):
    return dict(epoch=epoch, loss=1.0 / epoch, train_acc=0.5, test_acc=0.6, test_miou=miou,
                lr=0.1, seconds=1.0)


def test_saved_epochs_are_what_resume_reads_and_the_stable_names_follow(tmp_path):
    net = nn.Dense(2, in_units=3)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1,
                                                          'momentum': 0.9})
    folder = RunFolder(str(tmp_path / 'new' / 'out'))
    folder.lock()
    history = []
    for epoch, miou in ((1, 0.4), (2, 0.3)):
        history.append(_row(epoch, miou))
        state = dict(epoch=epoch, best_miou=0.4, best_epoch=1, baseline=None,
                     arch='fcn32s', run_id='abc')
        folder.save_epoch(net, trainer, state, history, {'seed': 0}, is_best=epoch == 1)
        net.weight.set_data(net.weight.data() + 1)  # epoch 2's weights differ
    folder.unlock()
    out = tmp_path / 'new' / 'out'
    _assert_tidy(str(out))
    state = RunFolder(str(out)).read_state()
    assert (state['epoch'], state['best_epoch'], state['args']) == (2, 1, {'seed': 0})
    params, states = RunFolder(str(out)).checkpoint_files(state)
    assert os.path.samefile(params, out / 'last.params')
    assert os.path.samefile(states, out / 'last.states')
    # best.params is epoch 1's file, kept while epoch 2 was saved.
    assert os.path.samefile(out / 'best.params', out / state['checkpoint']['best'])
    assert not np.array_equal(nd.load(str(out / 'best.params'))['weight'].asnumpy(),
                              nd.load(str(out / 'last.params'))['weight'].asnumpy())
    assert _losses(str(out)) == [1.0, 0.5]
    assert not (out / '.lock').exists()


def test_a_folder_the_run_made_goes_again_if_nothing_was_saved(tmp_path):
    folder = RunFolder(str(tmp_path / 'a' / 'b'))
    folder.lock()
    assert (tmp_path / 'a' / 'b' / '.lock').is_file()
    folder.unlock()
    assert not (tmp_path / 'a').exists()
