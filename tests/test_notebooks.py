"""Test d2lfcn.notebooks: chapters become notebooks that Jupyter runs.

The execution test uses nbclient directly (not anything in d2lfcn) with the
kernel named 'python3'. jupyter_client starts that kernel with the Python it
runs in (ipykernel's kernel.json says "python", which it resolves to
sys.executable), so in a fresh virtual environment the notebook runs on that
environment's d2lfcn; a final cell checks this.
"""
import os
import sys
from pathlib import Path

import nbformat
import pytest

from d2lfcn.book.notebook import chapter_to_notebook
from d2lfcn.notebooks import main

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / 'chapters'
FASTEST = CHAPTERS / 'conv-layer.md'  # about 2 s in fast mode


def fences(text, lang):
    """Return the bodies of the ```lang blocks of a markdown text."""
    parts = text.split('```' + lang + '\n')[1:]
    return [p.split('```', 1)[0] for p in parts]


def test_python_blocks_become_code_cells_in_order_and_shell_stays_text():
    text = (CHAPTERS / 'fcn.md').read_text(encoding='utf-8')
    nb = chapter_to_notebook(str(CHAPTERS / 'fcn.md'))
    code = [c.source for c in nb.cells if c.cell_type == 'code']
    assert code == [b.rstrip('\n') for b in fences(text, 'python')]
    markdown = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    for command in fences(text, 'bash'):
        assert '```bash\n' + command in markdown  # shown, never executed
    assert not any(c.source.startswith('%%') for c in nb.cells)
    assert nb.metadata['kernelspec']['name'] == 'python3'


def test_links_work_from_the_output_folder(tmp_path):
    out = tmp_path / 'notebooks'
    [path] = main_paths([str(CHAPTERS / 'fcn.md')], out)
    nb = nbformat.read(path, as_version=4)
    markdown = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    images = [line.split('](')[1].split(')')[0] for line in markdown.splitlines()
              if line.startswith('![')]
    assert images, 'fcn.md shows figures'
    for target in images:
        assert os.path.normpath(out / target) == os.path.normpath(ROOT / 'img' / Path(target).name)
    assert '](semantic-segmentation-and-dataset.ipynb)' in markdown
    assert '.md)' not in markdown


def main_paths(chapters, out):
    main(chapters + ['--out-dir', str(out)])
    return sorted(str(p) for p in Path(out).glob('*.ipynb'))


def test_cli_errors_are_one_line(tmp_path, capsys):
    from d2lfcn.cli import run_cli
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(tmp_path / 'missing.md'), '--out-dir', str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'missing.md' in err and err.count('\n') == 1
    assert not list(tmp_path.glob('*.ipynb'))


@pytest.mark.slow
def test_generated_notebook_runs_in_jupyter(tmp_path, monkeypatch):
    from nbclient import NotebookClient
    out = tmp_path / 'notebooks'
    [path] = main_paths([str(FASTEST)], out)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        'import sys, d2lfcn\nprint(sys.prefix)\nprint(d2lfcn.__file__)'))
    for name, value in dict(D2LFCN_FAST='1', MPLBACKEND='Agg', HOME=str(tmp_path),
                            D2LFCN_DATA=str(tmp_path / 'data')).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    NotebookClient(nb, kernel_name='python3', timeout=600,
                   resources={'metadata': {'path': str(out)}}).execute()
    outputs = [''.join(o.get('text', '') for o in c.outputs)
               for c in nb.cells if c.cell_type == 'code']
    # The corr2d example of the chapter, computed in the kernel.
    assert any('[[19. 25.]' in o and '[37. 43.]]' in o for o in outputs)
    prefix, module = outputs[-1].split()
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)
    assert Path(module).resolve() == ROOT / 'd2lfcn' / '__init__.py'


@pytest.mark.slow
def test_execute_saves_outputs_and_a_failure_names_the_line(tmp_path, capsys):
    from d2lfcn.cli import run_cli
    chapter = tmp_path / 'tiny.md'
    chapter.write_text(
        '# Tiny\n\n```python\nfor i in range(3):\n    print(f"\\r{i}/2", end="")\n'
        'print()\nprint("done")\n```\n\n```python\nimport matplotlib.pyplot as plt\n'
        'plt.plot([0, 1])\nplt.show()\n```\n')
    out = tmp_path / 'notebooks'
    main([str(chapter), '--out-dir', str(out), '--execute'])
    first, second = [c for c in nbformat.read(out / 'tiny.ipynb', as_version=4).cells
                     if c.cell_type == 'code']
    assert [o.text for o in first.outputs] == ['2/2\ndone\n']  # the bar's last state
    assert [o.output_type for o in second.outputs] == ['display_data']
    assert 'image/png' in second.outputs[0].data  # inline, whatever MPLBACKEND says

    chapter.write_text('# Tiny\n\n```python\nx = 1\ny = x / 0\n```\n')
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(chapter), '--out-dir', str(tmp_path / 'failed'), '--execute'])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f'error: {chapter}, line 5: '
                                       'ZeroDivisionError: division by zero\n')
    assert not list((tmp_path / 'failed').glob('*.ipynb'))
