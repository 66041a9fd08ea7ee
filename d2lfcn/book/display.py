"""Show library source code in a chapter: highlighted in Jupyter and the book, plain elsewhere.

Explained in chapters/index.md.
"""
import inspect
import os
import sys
import textwrap

__all__ = ['show_source']


def show_source(obj):
    """Show the source code of `obj` (a function, class or method) and the file it is in.

    In Jupyter and in the book the code is rendered as a highlighted Python
    block under a note naming its file and line; in a plain interpreter it is
    printed, headed by the same note as a comment. Either way it is the code
    that runs, read from the installed package, so a chapter never shows a
    stale copy. Explained in chapters/index.md.
    """
    source = _Source(obj)
    if not _in_ipython():
        print(source.text())
        return
    from IPython.display import display  # only here: IPython is not a dependency
    display(source)


def _in_ipython():
    """Return True inside an IPython shell or Jupyter kernel, without importing IPython."""
    ipython = sys.modules.get('IPython')
    return ipython is not None and ipython.get_ipython() is not None


class _Source:
    """The source of an object, with the file and line it starts at."""

    def __init__(self, obj):
        obj = inspect.unwrap(obj)
        self.code = textwrap.dedent(inspect.getsource(obj)).rstrip('\n')  # methods too
        self.line = inspect.getsourcelines(obj)[1]
        self.file = _package_path(inspect.getsourcefile(obj), obj.__module__)
        self.name = f'{obj.__module__}.{obj.__qualname__}'

    def note(self):
        return f'{self.file}, line {self.line}'

    def text(self):
        return f'# {self.note()}\n{self.code}\n'

    def __repr__(self):  # what IPython's terminal shows
        return self.text()

    def _repr_markdown_(self):  # what Jupyter and the book render
        fence = '````' if '```' in self.code else '```'
        return f'`{self.name}`, from {self.note()}:\n\n{fence}python\n{self.code}\n{fence}\n'


def _package_path(path, module):
    """Return `path` relative to the folder holding the top-level package of `module`."""
    top = sys.modules[module.split('.')[0]]
    top_file = getattr(top, '__file__', None)
    if top_file is None:
        return os.path.basename(path)
    root = os.path.dirname(top_file)
    if os.path.basename(top_file) == '__init__.py':
        root = os.path.dirname(root)  # a package: paths start with its folder name
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root)).replace(os.sep, '/')
