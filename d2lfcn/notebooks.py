"""Turn the chapters into Jupyter notebooks, and run them: `python -m d2lfcn.notebooks`.

Explained in chapters/index.md.
"""
import glob
import os

from .book.notebook import CellError, chapter_to_notebook, execute_notebook, read_text
from .cli import ArgumentParser, run_cli
from .utils import UserError, atomic_path, check_out_dir, removed_on_error

__all__ = ['write_notebooks']


def write_notebooks(chapters, out_dir, execute=False):
    """Write one .ipynb per chapter into `out_dir`, executed if `execute`; return their paths.

    Every chapter is read (and run) before anything is written.
    Explained in chapters/index.md.
    """
    import nbformat
    books = [(chapter, chapter_to_notebook(chapter, out_dir)) for chapter in chapters]
    paths = []
    with removed_on_error(out_dir):
        for chapter, nb in books:
            if execute:
                try:
                    execute_notebook(nb, cwd=out_dir)
                except CellError as e:
                    where = e.where(read_text(chapter), nb)
                    raise UserError(f'{chapter}, {where}: {e.summary}') from None
        for chapter, nb in books:
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
    p.add_argument('--execute', action='store_true',
                   help='run each notebook in a Jupyter kernel (in --out-dir) and save it '
                        'with its outputs; D2LFCN_FAST=1 makes it quick (default: off)')
    args = p.parse_args(argv)
    check_out_dir(args.out_dir)
    chapters = args.chapters or sorted(glob.glob(os.path.join('chapters', '*.md')))
    if not chapters:
        raise UserError('no chapters/*.md here: run this in the d2lfcn checkout, '
                        'or name the chapter files')
    for path in write_notebooks(chapters, args.out_dir, execute=args.execute):
        print(path)


if __name__ == '__main__':
    run_cli(main)
