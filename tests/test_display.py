"""Test d2lfcn.book.display: show_source prints in a plain interpreter, renders in IPython."""
import inspect
import subprocess
import sys
from pathlib import Path

import d2lfcn
from d2lfcn.book.display import show_source

ROOT = Path(__file__).resolve().parents[1]


def test_plain_interpreter_prints_the_source_under_its_file_and_line():
    # A fresh interpreter, as the chapter tests run the chapters.
    proc = subprocess.run(
        [sys.executable, '-c', 'import sys, d2lfcn\n'
         'd2lfcn.show_source(d2lfcn.corr2d)\n'
         'd2lfcn.show_source(d2lfcn.SkipFCN.hybrid_forward)\n'
         "print('IPython imported:', 'IPython' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    out = proc.stdout
    first, second = out.split('\n# ')[0], out.split('\n# ')[1]
    # The note points at the line of the file where the definition starts.
    header, code = first.split('\n', 1)
    file, line = header[2:].split(', line ')
    assert file == 'd2lfcn/conv.py'
    assert (ROOT / file).read_text().splitlines()[int(line) - 1] == 'def corr2d(X, K):'
    assert code.strip() == inspect.getsource(d2lfcn.corr2d).strip()
    # A method is shown dedented, so it reads as code.
    assert second.startswith('d2lfcn/model.py, line ')
    assert '\ndef hybrid_forward(self, F, x):\n' in second
    assert out.rstrip().endswith('IPython imported: False')


def test_ipython_renders_markdown_with_a_python_block():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    InteractiveShell.instance()
    try:
        with capture_output() as captured:
            show_source(d2lfcn.bilinear_kernel)
            show_source(d2lfcn.SegmentationLoss)
    finally:
        InteractiveShell.clear_instance()
    assert captured.stdout == ''
    assert len(captured.outputs) == 2  # each call shows its block, even mid-cell
    markdown = captured.outputs[0].data['text/markdown']
    note, block = markdown.split('\n\n', 1)
    line = inspect.getsourcelines(d2lfcn.bilinear_kernel)[1]
    assert note == f'`d2lfcn.model.bilinear_kernel`, from d2lfcn/model.py, line {line}:'
    assert block == '```python\n' + inspect.getsource(d2lfcn.bilinear_kernel) + '```\n'
    plain = captured.outputs[1].data['text/plain']
    assert plain.startswith('# d2lfcn/') and 'class SegmentationLoss' in plain
