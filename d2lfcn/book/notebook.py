"""Read the chapters as Jupyter notebooks, and run them in a kernel.

The commands `python -m d2lfcn.notebooks` and `python -m d2lfcn.book` use it.
Explained in chapters/index.md.
"""
import os
import re
import time

from .. import utils
from ..utils import UserError

__all__ = ['read_text', 'read_chapter', 'chapter_to_notebook', 'execute_notebook', 'CellError',
           'python_block_lines']

IMAGE_LINK = re.compile(r'(!\[[^\]]*\]\()([^)\s]+)(\))')
CHAPTER_LINK = re.compile(r'(?<!!)(\[[^\]]*\]\()([\w.-]+)\.md(\))')
FENCE = re.compile(r'^(```|~~~)\s*([^`\s]*)')
KERNELSPEC = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
PYTHON_HEADER = ('---\njupyter:\n  kernelspec:\n'
                 + ''.join(f'    {k}: {v}\n' for k, v in sorted(KERNELSPEC.items())) + '---\n\n')
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
CELL_FRAME = re.compile(r'^Cell In\s*\[\d*\], line (\d+)', re.M)


def _jupytext():
    try:
        import jupytext
    except ImportError:
        raise UserError("jupytext is not installed: pip install -e '.[book]' "
                        '(or pip install jupytext)') from None
    return jupytext


def read_text(path):
    """Return a chapter file's text, or raise UserError if it is missing or not UTF-8."""
    return utils.read_text(path, 'chapter', 'save it as UTF-8')


def read_chapter(text):
    """Return a chapter's markdown `text` as a notebook: ```python blocks become code cells.

    Blocks in other languages (the shell commands) stay text, so running the
    notebook never starts a training run. Links are left as they are.
    Explained in chapters/index.md.
    """
    # Without a kernel in its header, jupytext would take the language of most
    # blocks for the notebook's: bash in a chapter with more shell than python.
    nb = _jupytext().reads(PYTHON_HEADER + text, fmt='md')
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code' and cell.source.startswith('%%'):
            # jupytext turns ```bash into a `%%bash` cell; keep it a shown command.
            magic, _, body = cell.source.partition('\n')
            cell = _markdown(f'```{magic[2:].strip()}\n{body}\n```')
        cells.append(cell)
    nb.cells = cells
    nb.metadata['kernelspec'] = dict(KERNELSPEC)
    nb.metadata.pop('jupytext', None)
    # Error messages map code cells back to blocks by their order.
    if sum(c.cell_type == 'code' for c in cells) != len(python_block_lines(text)):
        raise UserError('jupytext and d2lfcn disagree on the ```python blocks of a '
                        'chapter: keep every block at the start of a line')
    return nb


def python_block_lines(text):
    """Return the line numbers of the first code line of each ```python block in `text`."""
    starts, marker = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if marker is None and match:
            marker = match.group(1)
            if match.group(2) == 'python':
                starts.append(number + 1)
        elif marker is not None and line.strip().startswith(marker):
            marker = None
    return starts


def chapter_to_notebook(path, out_dir=None):
    """Return the chapter at `path` as a notebook whose links work from `out_dir`.

    Relative image links are rewritten to work from `out_dir` (default: the
    chapter's folder), and links to other chapters point to their notebooks.
    Explained in chapters/index.md.
    """
    nb = read_chapter(read_text(path))
    chapter_dir = os.path.dirname(os.path.abspath(path))
    out_dir = os.path.abspath(out_dir or chapter_dir)
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            cell.source = IMAGE_LINK.sub(
                lambda m: m.group(1) + _relink(m.group(2), chapter_dir, out_dir) + m.group(3),
                cell.source)
            # A link to another chapter points to that chapter's notebook.
            cell.source = CHAPTER_LINK.sub(r'\1\2.ipynb\3', cell.source)
    return nb


def _markdown(source):
    import nbformat
    return nbformat.v4.new_markdown_cell(source)


def _relink(target, chapter_dir, out_dir):
    """Return an image link relative to `out_dir` instead of the chapter's folder."""
    if re.match(r'^[a-z]+:', target) or os.path.isabs(target):
        return target  # a URL or an absolute path works from anywhere
    return os.path.relpath(os.path.join(chapter_dir, target), out_dir).replace(os.sep, '/')


class CellError(Exception):
    """Signal that cell `index` of a notebook raised; `line` is the line in that cell."""

    def __init__(self, index, line, summary):
        super().__init__(summary)
        self.index, self.line, self.summary = index, line, summary

    def where(self, text, nb):
        """Return 'line N' of the chapter `text` that `nb` was read from."""
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code']
        starts = python_block_lines(text)
        offset = len(code) - len(starts)  # cells put before the chapter's own (the book's)
        block = code.index(self.index) - offset
        if block < 0:
            return 'a cell added before the chapter'
        return f'line {starts[block] + (self.line or 1) - 1}'


def execute_notebook(nb, cwd, env=None, timeout=1800):
    """Run the code cells of `nb` in place in a fresh Python kernel; return the seconds taken.

    The kernel runs in folder `cwd` with environment `env` (default: this
    one). Progress bars in the outputs are cleaned to their final state. The
    first cell that raises stops the run with a `CellError`.
    Explained in chapters/index.md.
    """
    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    except ImportError:
        raise UserError("nbclient is not installed: pip install -e '.[book]'") from None
    env = dict(os.environ if env is None else env)
    env.pop('MPLBACKEND', None)  # a notebook shows its figures inline
    client = NotebookClient(nb, kernel_name=KERNELSPEC['name'], timeout=timeout,
                            resources={'metadata': {'path': cwd}}, record_timing=False,
                            # ipykernel's warning about local TCP would end up in every log.
                            extra_arguments=['--IPKernelApp.log_level=ERROR'])
    current = {}
    client.on_cell_execute = lambda cell, cell_index: current.update(index=cell_index)
    start = time.time()
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        index = current['index']
        raise CellError(index, _error_line(nb.cells[index]), f'{e.ename}: {e.evalue}') from None
    except CellTimeoutError:
        raise CellError(current['index'], None, f'no output for {timeout} s') from None
    except DeadKernelError:
        raise CellError(current['index'], None, 'the Python kernel died (out of memory?)') \
            from None
    for cell in nb.cells:
        if cell.cell_type == 'code':
            cell.outputs = _clean_streams(cell.outputs)
    return time.time() - start


def _error_line(cell):
    """Return the line of `cell` in the traceback of its error output, or None."""
    for output in cell.get('outputs', []):
        if output.get('output_type') == 'error':
            match = CELL_FRAME.search(ANSI.sub('', '\n'.join(output.get('traceback', []))))
            return int(match.group(1)) if match else None
    return None


def _clean_streams(outputs):
    """Merge consecutive stream outputs and keep what a terminal would show of each line."""
    merged = []
    for output in outputs:
        if (output.get('output_type') == 'stream' and merged
                and merged[-1].get('output_type') == 'stream'
                and merged[-1]['name'] == output['name']):
            merged[-1]['text'] += output['text']
        else:
            merged.append(output)
    for output in merged:
        if output.get('output_type') == 'stream':
            # A progress bar redraws its line after '\r'; keep the last drawing.
            output['text'] = '\n'.join(line.rstrip('\r').rsplit('\r', 1)[-1]
                                       for line in output['text'].split('\n'))
    return merged
