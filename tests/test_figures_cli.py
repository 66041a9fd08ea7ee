"""Test `python -m d2lfcn.figures`: it redraws exactly the figures the chapters show.

The set of images referenced by chapters/*.md (found by the same pattern as
tests/test_chapters.py) must equal the set of files the command writes in
fast mode, so a figure added to a chapter without a generator (or a
generator nobody shows) fails here.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from d2lfcn.figures import main

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)')
CLI = [sys.executable, '-m', 'd2lfcn.figures']


def referenced_images():
    names = set()
    for chapter in (ROOT / 'chapters').glob('*.md'):
        for target in IMAGE.findall(chapter.read_text(encoding='utf-8')):
            path = (chapter.parent / target).resolve()
            assert path.parent == ROOT / 'img', f'{chapter.name}: {target} is not in img/'
            names.add(path.name)
    return names


def run(args, tmp_path, **kwargs):
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1', HOME=str(tmp_path),
               D2LFCN_DATA=str(tmp_path / 'data'), MXNET_HOME=str(tmp_path / 'mxnet'),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [
                   p for p in [os.environ.get('PYTHONPATH')] if p]))
    env.pop('D2LFCN_FAST', None)
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200, **kwargs)


def test_fast_run_draws_exactly_the_chapter_figures(tmp_path):
    wanted = referenced_images()
    assert len(wanted) >= 11
    proc = run(CLI + ['--fast', '--out-dir', 'figs'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'found in sys.modules' not in proc.stderr  # runpy's warning is silenced
    produced = set(os.listdir(tmp_path / 'figs'))
    assert produced == wanted
    for name in produced:
        with Image.open(tmp_path / 'figs' / name) as im:
            assert im.format == 'PNG' and min(im.size) > 50
    # The committed figures are the same set.
    assert wanted <= set(os.listdir(ROOT / 'img'))


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory, small_voc_dir):
    """A one-epoch run of python -m d2lfcn.train on the tiny dataset."""
    from d2lfcn import train
    run_dir = tmp_path_factory.mktemp('run') / 'run'
    train.main(['--demo', '--data-dir', small_voc_dir, '--num-epochs', '1', '--crop-size', '64',
          '64', '--batch-size', '4', '--out-dir', str(run_dir)])
    return run_dir


def test_params_draws_the_runs_curves_and_predictions(tmp_path, trained_run, small_voc_dir,
                                                      capsys):
    params = trained_run / 'best.params'
    assert params.is_file() and (trained_run / 'metrics.csv').is_file()
    capsys.readouterr()
    main(['--params', str(params), '--data-dir', small_voc_dir, '--out-dir',
                  str(tmp_path / 'figs'), '--only', 'training-curves', 'predictions'])
    assert sorted(os.listdir(tmp_path / 'figs')) == ['predictions.png', 'training-curves.png']
    assert 'training the demo' not in capsys.readouterr().out  # --params: no training run


def test_params_errors_are_one_line_and_write_nothing(tmp_path, trained_run, small_voc_dir,
                                                      capsys):
    from d2lfcn.utils import run_cli
    lonely = tmp_path / 'elsewhere' / 'best.params'  # no metrics.csv next to it
    lonely.parent.mkdir()
    lonely.write_bytes((trained_run / 'best.params').read_bytes())
    corrupt = tmp_path / 'corrupt' / 'best.params'
    corrupt.parent.mkdir()
    corrupt.write_bytes(b'not parameters')
    (corrupt.parent / 'metrics.csv').write_text('epoch,loss\n1,0.5\n')
    for args, needle in [
            (['--params', str(tmp_path / 'missing.params')], 'missing.params'),
            (['--params', str(lonely), '--only', 'training-curves'], 'metrics.csv'),
            (['--params', str(corrupt), '--only', 'predictions'], 'corrupt'),
            (['--only', 'no-such-figure'], 'no-such-figure'),
            (['--data-dir', str(tmp_path / 'nowhere'), '--only', 'voc-samples'], 'nowhere')]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            # Flags given later win, so each case may override --data-dir.
            run_cli(main, ['--data-dir', small_voc_dir, '--out-dir', str(tmp_path / 'figs')]
                    + args)
        err = capsys.readouterr().err
        assert e.value.code == 2, args
        assert err.startswith('error: ') and err.count('\n') == 1 and needle in err, err
        assert not (tmp_path / 'figs').exists() or not os.listdir(tmp_path / 'figs')
