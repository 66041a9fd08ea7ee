"""Turn the chapters into Jupyter notebooks: `python -m d2lfcn.notebooks`.

Explained in chapters/index.md.
"""
import glob
import os
import re

from .utils import ArgumentParser, UserError, atomic_path, run_cli

__all__ = ['chapter_to_notebook', 'write_notebooks']

IMAGE_LINK = re.compile(r'(!\[[^\]]*\]\()([^)\s]+)(\))')
CHAPTER_LINK = re.compile(r'(?<!!)(\[[^\]]*\]\()([\w.-]+)\.md(\))')
KERNELSPEC = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}


def _jupytext():
    try:
        import jupytext
    except ImportError:
        raise UserError("jupytext is not installed: pip install 'd2lfcn[test]' "
                        '(or pip install jupytext)') from None
    return jupytext


def chapter_to_notebook(path, out_dir=None):
    """Return the chapter at `path` as a notebook: ```python blocks become code cells.

    Blocks in other languages (the shell commands) stay text, so running the
    notebook never starts a training run. Relative image links are rewritten
    to work from `out_dir` (default: the chapter's folder), and links to
    other chapters point to their notebooks.
    Explained in chapters/index.md.
    """
    jupytext = _jupytext()
    with open(path, encoding='utf-8') as f:
        text = f.read()
    nb = jupytext.reads(text, fmt='md')
    chapter_dir = os.path.dirname(os.path.abspath(path))
    out_dir = os.path.abspath(out_dir or chapter_dir)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code' and cell.source.startswith('%%'):
            # jupytext turns ```bash into a `%%bash` cell; keep it a shown command.
            magic, _, body = cell.source.partition('\n')
            cell = _markdown(f'```{magic[2:].strip()}\n{body}\n```')
        if cell.cell_type == 'markdown':
            cell.source = IMAGE_LINK.sub(
                lambda m: m.group(1) + _relink(m.group(2), chapter_dir, out_dir) + m.group(3),
                cell.source)
            # A link to another chapter points to that chapter's notebook.
            cell.source = CHAPTER_LINK.sub(r'\1\2.ipynb\3', cell.source)
        cells.append(cell)
    nb.cells = cells
    nb.metadata['kernelspec'] = dict(KERNELSPEC)
    nb.metadata.pop('jupytext', None)
    return nb


def _markdown(source):
    import nbformat
    return nbformat.v4.new_markdown_cell(source)


def _relink(target, chapter_dir, out_dir):
    """Return an image link relative to `out_dir` instead of the chapter's folder."""
    if re.match(r'^[a-z]+:', target) or os.path.isabs(target):
        return target  # a URL or an absolute path works from anywhere
    return os.path.relpath(os.path.join(chapter_dir, target), out_dir).replace(os.sep, '/')


def write_notebooks(chapters, out_dir):
    """Write one .ipynb per chapter into `out_dir`; return their paths.

    Explained in chapters/index.md.
    """
    import nbformat
    paths = []
    for chapter in chapters:
        if not os.path.isfile(chapter):
            raise UserError(f'{chapter}: no such chapter file')
        nb = chapter_to_notebook(chapter, out_dir)
        name = os.path.splitext(os.path.basename(chapter))[0] + '.ipynb'
        path = os.path.join(out_dir, name)
        with atomic_path(path) as tmp:
            nbformat.write(nb, tmp)
        paths.append(path)
    return paths


def main(argv=None):
    """Convert chapters to notebooks; see --help."""
    p = ArgumentParser(
        prog='python -m d2lfcn.notebooks',
        description='Turn chapters/*.md into Jupyter notebooks with jupytext: python '
                    'blocks become code cells, shell commands stay text.')
    p.add_argument('chapters', nargs='*', metavar='CHAPTER',
                   help='markdown chapters (default: chapters/*.md)')
    p.add_argument('--out-dir', default='notebooks',
                   help='folder for the .ipynb files (default: notebooks)')
    args = p.parse_args(argv)
    chapters = args.chapters or sorted(glob.glob(os.path.join('chapters', '*.md')))
    if not chapters:
        raise UserError('no chapters/*.md here: run this in the d2lfcn checkout, '
                        'or name the chapter files')
    for path in write_notebooks(chapters, args.out_dir):
        print(path)


if __name__ == '__main__':
    run_cli(main)
