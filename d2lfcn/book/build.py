"""Build the book, every chapter executed, as static offline HTML.

The chapters are read as notebooks (jupytext), executed in a Jupyter kernel
into jupyter-cache, and rendered by Sphinx with MyST-NB and the book theme
(configuration: conf.py, next to this file). The command is
`python -m d2lfcn.book` (__main__.py). Explained in chapters/index.md.
"""
import contextlib
import glob
import hashlib
import io
import os
import pathlib
import re
import shutil
import tempfile

from . import notebook
from ..utils import UserError, atomic_path

__all__ = ['build_book', 'screenshot_pages']

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # d2lfcn/
CONF_DIR = os.path.dirname(os.path.abspath(__file__))  # conf.py and static/
MARKER = '.d2lfcn-book'  # in every built book: only a book is ever replaced by a book
LOCAL_LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([\w.-]+)\.md(?:#[^)]*)?\)')
IMAGE_LINK = re.compile(r'!\[[^\]]*\]\(([^)\s]+)')
# Changes to these leave the chapters' outputs as they are: they build the book.
NOT_LIBRARY = ('book/build.py', 'book/notebook.py', 'book/__main__.py', 'book/conf.py',
               'notebooks.py', '__main__.py')


def reading_order(chapters_dir):
    """Return the chapter names (no .md) that chapters/index.md links to, in order.

    Every other .md file in the folder must be one of them, so that a new
    chapter is added to the book by adding it to the index.
    Explained in chapters/index.md.
    """
    index = os.path.join(chapters_dir, 'index.md')
    if not os.path.isfile(index):
        raise UserError(f'{index}: not found; run this in the d2lfcn checkout '
                        'or pass --chapters-dir')
    names = []
    text = notebook.read_text(index)
    for number, line in enumerate(text.splitlines(), 1):
        for name in LOCAL_LINK.findall(line):
            if name == 'index' or name in names:
                continue
            if not os.path.isfile(os.path.join(chapters_dir, name + '.md')):
                raise UserError(f'{index}, line {number}: links to {name}.md, '
                                'which does not exist')
            names.append(name)
    for path in sorted(glob.glob(os.path.join(chapters_dir, '*.md'))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name != 'index' and name not in names:
            raise UserError(f'{path}: not in the reading order; link to it from {index}')
    return names


def check_images(chapters_dir, names):
    """Stop with one line if a chapter shows an image file that does not exist."""
    for name in ['index'] + names:
        path = os.path.join(chapters_dir, name + '.md')
        lines = notebook.read_text(path).splitlines()
        for number, line in enumerate(lines, 1):
            for target in IMAGE_LINK.findall(line):
                if re.match(r'^[a-z]+:', target):
                    raise UserError(f'{path}, line {number}: image {target} is not a '
                                    'local file; the book must work offline')
                if not os.path.isfile(os.path.join(chapters_dir, target)):
                    raise UserError(f'{path}, line {number}: image {target} not found '
                                    '(python -m d2lfcn.figures draws the figures in img/)')


def cache_key(fast):
    """Return the hidden first cell of every chapter: what its outputs depend on.

    jupyter-cache matches a notebook by its code, so this cell makes a cached
    chapter stale when the library changes or when --fast is toggled.
    """
    sha = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(PACKAGE_DIR, '**', '*.py'), recursive=True)):
        relative = os.path.relpath(path, PACKAGE_DIR).replace(os.sep, '/')
        if relative in NOT_LIBRARY:
            continue
        sha.update(relative.encode() + b'\0')
        with open(path, 'rb') as f:
            sha.update(f.read())
    return (f'# Hidden cell of python -m d2lfcn.book: D2LFCN_FAST={int(fast)}, '
            f'd2lfcn sources sha1 {sha.hexdigest()}')


def read_book_chapter(text, key):
    """Return a chapter as a notebook for the book: `key` becomes a hidden first cell.

    MyST-NB calls this (see nb_custom_formats), and so does execute_chapters,
    so both see the same notebook and jupyter-cache matches them.
    """
    import nbformat
    nb = notebook.read_chapter(text)
    # MyST-NB reports a problem at this line of the file plus its line in the cell.
    nb.metadata['source_map'] = [-1] + source_map(text, nb.cells)
    nb.cells.insert(0, nbformat.v4.new_code_cell(key, metadata={'tags': ['remove-cell']}))
    return nb


def source_map(text, cells):
    """Return, for each cell, the line (from 1) of `text` before its source starts."""
    lines, starts, at = text.splitlines(), [], 0
    for cell in cells:
        source = cell.source.splitlines()
        first = next((i for i, line in enumerate(source) if line.strip()), 0)
        try:
            found = lines.index(source[first], at) if source else at
        except ValueError:  # not verbatim in the file: keep the previous position
            found = at
        starts.append(found - first - 1)  # MyST-NB adds one, and so does MyST
        at = found + len(source) - first
    return starts


def kernel_env(fast):
    """Return the environment of the chapters' kernel: this d2lfcn, fast or not."""
    env = dict(os.environ, D2LFCN_FAST='1' if fast else '0')
    root = os.path.dirname(PACKAGE_DIR)  # the kernel imports the d2lfcn that builds the book
    env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in [env.get('PYTHONPATH')] if p])
    return env


TOOLCHAIN = ['jupytext', 'nbclient', 'ipykernel', 'jupyter_cache', 'sphinx', 'myst_nb',
             'sphinx_book_theme', 'latex2mathml']


def check_toolchain():
    """Stop with one line if a package of the book extra is missing."""
    import importlib.util
    missing = [name for name in TOOLCHAIN if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"the book needs {', '.join(missing)}: pip install -e '.[cpu,book]'")


def _cache(cache_dir):
    from jupyter_cache import get_cache
    os.makedirs(cache_dir, exist_ok=True)
    return get_cache(cache_dir)


def execute_chapters(chapters_dir, names, cache_dir, key, env, log=print):
    """Execute every chapter whose outputs are not in jupyter-cache, and cache them.

    A chapter that raises stops the build with one line naming the chapter
    and the line of its markdown file. Returns {name: seconds} of what ran.
    """
    from jupyter_cache.base import CacheBundleIn
    cache = _cache(cache_dir)
    # Old versions of edited chapters go first once there are more than this.
    cache.change_cache_limit(max(50, 10 * len(names)))
    ran = {}
    for name in ['index'] + names:
        path = os.path.join(chapters_dir, name + '.md')
        text = notebook.read_text(path)
        nb = read_book_chapter(text, key)
        try:
            cache.match_cache_notebook(nb)
            continue
        except KeyError:
            pass
        log(f'executing {path} ...')
        try:
            seconds = notebook.execute_notebook(nb, cwd=chapters_dir, env=env)
        except notebook.CellError as e:
            raise UserError(f'{path}, {e.where(text, nb)}: {e.summary}') from None
        cache.cache_notebook_bundle(
            CacheBundleIn(nb, os.path.abspath(path), data={'execution_seconds': seconds}),
            check_validity=False, overwrite=True)
        ran[name] = seconds
        log(f'executed {path} in {seconds:.0f} s')
    return ran


def render_html(chapters_dir, names, cache_dir, key, html_dir, work_dir):
    """Render the executed chapters with Sphinx into `html_dir`; Sphinx warnings are errors."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils
    warnings = io.StringIO()
    overrides = {
        'd2lfcn_chapters': names,
        'nb_execution_cache_path': os.path.abspath(cache_dir),
        'nb_custom_formats': {'.md': ['d2lfcn.book.build.read_book_chapter', {'key': key}]},
    }
    with patch_docutils(CONF_DIR), docutils_namespace():
        app = Sphinx(os.path.abspath(chapters_dir), CONF_DIR, html_dir,
                     os.path.join(work_dir, 'doctrees'), 'html', confoverrides=overrides,
                     status=None, warning=warnings, freshenv=True)
        app.build()
    problems = [line for line in warnings.getvalue().splitlines() if line.strip()]
    if problems:
        more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
        first = re.sub(r'\x1b\[[0-9;]*m', '', problems[0])
        # 'chapters/x.md:12: WARNING: text' reads as the book's other errors do.
        first = re.sub(r'^(.+?):(\d+): (?:WARNING|ERROR): ', r'\1, line \2: ', first)
        raise UserError(first + more)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(html_dir, '_sources'))  # left empty: no sources copied
    with open(os.path.join(html_dir, MARKER), 'w') as f:
        f.write('built by python -m d2lfcn.book; the next build replaces this folder\n')


def check_out_dir(out_dir):
    """Stop with one line unless `out_dir` is absent, empty or a book built before."""
    if os.path.isfile(out_dir) or (
            os.path.isdir(out_dir) and os.listdir(out_dir)
            and not os.path.isfile(os.path.join(out_dir, MARKER))):
        raise UserError(f'--out-dir {out_dir} exists and is not a book built by '
                        'd2lfcn.book: choose another folder or remove it')


def replace_dir(new, old):
    """Move folder `new` to `old`, replacing a previous book there."""
    check_out_dir(old)
    if os.path.exists(old):
        trash = old.rstrip(os.sep) + '.old'
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(old, trash)
        os.replace(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, old)


@contextlib.contextmanager
def _environ(env):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_book(chapters_dir, out_dir, cache_dir, fast=False, log=print):
    """Execute the chapters (cached) and write the HTML book to `out_dir`; return page names.

    The book is built next to `out_dir` and moved there only when complete.
    Explained in chapters/index.md.
    """
    check_toolchain()
    names = reading_order(chapters_dir)
    check_images(chapters_dir, names)
    check_out_dir(out_dir)
    key = cache_key(fast)
    env = kernel_env(fast)
    execute_chapters(chapters_dir, names, cache_dir, key, env, log)
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix='.d2lfcn-book-', dir=parent)
    try:
        html_dir = os.path.join(work_dir, 'html')
        log('writing HTML ...')
        # Every chapter is in the cache now; should MyST-NB miss one anyway, it
        # runs it in this environment, so the cache never holds wrong outputs.
        with _environ(env):
            render_html(chapters_dir, names, cache_dir, key, html_dir, work_dir)
        replace_dir(html_dir, out_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return ['index'] + names


CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync']


def find_chromium():
    """Return the path of the Chromium to drive: $D2LFCN_CHROMIUM or the system's."""
    for candidate in [os.environ.get('D2LFCN_CHROMIUM'), 'chromium', 'chromium-browser',
                      'google-chrome']:
        path = candidate and shutil.which(candidate)
        if path:
            return path
    raise UserError('no Chromium found: install it (apt-get install chromium) '
                    'or set D2LFCN_CHROMIUM to its path')


def screenshot_pages(html_dir, pages, out_dir):
    """Save a full-page PNG of every page of the book into `out_dir`; return their paths."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError("--screenshots needs playwright: pip install -e '.[cpu,book]'") \
            from None
    chromium = find_chromium()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        for name in pages:
            page.goto(pathlib.Path(html_dir, name + '.html').resolve().as_uri())
            path = os.path.join(out_dir, name + '.png')
            with atomic_path(path) as tmp:
                page.screenshot(path=tmp, full_page=True)
            paths.append(path)
        browser.close()
    return paths
