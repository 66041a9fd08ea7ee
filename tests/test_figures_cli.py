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


@pytest.mark.slow
def test_fast_run_draws_exactly_the_chapter_figures(tmp_path):
    wanted = referenced_images()
    assert len(wanted) >= 10
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


def test_errors_are_one_line_and_write_nothing(tmp_path, small_voc_dir, capsys):
    from d2lfcn.cli import run_cli
    for args, needle in [
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
