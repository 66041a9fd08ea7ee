"""Test python -m d2lfcn.book: build the book (fast) and read every page in Chromium.

The browser is Debian's headless Chromium (/usr/bin/chromium, or
$D2LFCN_CHROMIUM), driven by Playwright; .ci/run installs it when missing.
What the pages must show is taken from elsewhere: figures and formulas from
the chapters' markdown, outputs from the executed notebooks in the book's
jupyter-cache. Every request the pages make is intercepted: only file:// and
127.0.0.1 may be reached. Each page's full-page screenshot is saved under the
test's temporary folder (python -m d2lfcn.book --screenshots DIR keeps them).
"""
import ast
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

import d2lfcn
from d2lfcn.book.build import CHROMIUM_FLAGS, find_chromium, reading_order

from forkrun import run_forked  # tests/forkrun.py

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_DIR = ROOT / 'chapters'
CHAPTERS = ['index'] + reading_order(str(CHAPTER_DIR))
PAGES = CHAPTERS + ['genindex', 'search']
IMAGE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)')
TEX_COMMAND = re.compile(r'\\[A-Za-z]{2,}')
DOLLAR_MATH = re.compile(r'\$[^$\s][^$]*\$')

# Facts about one page, gathered in the browser after it loaded.
PAGE_FACTS = '''() => {
  const article = document.querySelector('article.bd-article');
  const skip = 'pre, code, math, script, style, .highlight';
  const walker = document.createTreeWalker(article || document.body, NodeFilter.SHOW_TEXT);
  let prose = '';
  while (walker.nextNode()) {
    const parent = walker.currentNode.parentElement;
    if (!parent.closest(skip) && parent.getClientRects().length) {
      prose += walker.currentNode.textContent;
    }
  }
  const cells = [...document.querySelectorAll('div.cell')].map(cell => {
    const output = cell.querySelector('.cell_output');
    return {input: cell.querySelector('.cell_input').innerText,
            output: output ? output.innerText : null,
            images: output ? output.querySelectorAll('img').length : 0,
            keywords: output ? output.querySelectorAll('.highlight span.k').length : 0};
  });
  return {
    title: document.title,
    images: [...document.images].map(i => ({src: i.src, width: i.naturalWidth})),
    prose: prose,
    maths: article ? article.querySelectorAll('math').length : 0,
    cells: cells,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    pasted: [...document.querySelectorAll('article .pasted-text')].map(e => e.textContent),
    sidebar: [...document.querySelectorAll('nav.bd-docs-nav a.reference')].map(a => a.href),
    prev: (document.querySelector('a.left-prev') || {}).href || null,
    next: (document.querySelector('a.right-next') || {}).href || null,
  };
}'''


def book_command(*args, tmp, check=True):
    env = dict(os.environ, HOME=str(tmp), D2LFCN_DATA=str(tmp / 'data'),
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    proc = subprocess.run([sys.executable, '-m', 'd2lfcn.book', *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def book(tmp_path_factory):
    """Build the fast book once; return its folders and the build's output."""
    tmp = tmp_path_factory.mktemp('book')
    proc = book_command('--fast', '--out-dir', tmp / 'html', '--cache-dir', tmp / 'cache',
                        tmp=tmp)
    return dict(html=tmp / 'html', cache=tmp / 'cache', shots=tmp / 'screenshots',
                stdout=proc.stdout, stderr=proc.stderr)


@pytest.fixture(scope='module')
def pages(book):
    """Open every page in headless Chromium; return {page: facts} and what went wrong."""
    from playwright.sync_api import sync_playwright
    blocked, errors, facts = [], [], {}
    book['shots'].mkdir()

    def route(r):
        scheme, host = urlsplit(r.request.url)[:2]
        if scheme == 'file' or (scheme in ('http', 'https') and
                                host.split(':')[0] == '127.0.0.1'):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={'width': 1280, 'height': 900})
        context.route('**/*', route)
        page = context.new_page()
        page.on('pageerror', lambda e: errors.append(str(e)))
        for name in PAGES:
            page.goto((book['html'] / f'{name}.html').as_uri(), wait_until='load')
            facts[name] = page.evaluate(PAGE_FACTS)
            page.screenshot(path=str(book['shots'] / f'{name}.png'), full_page=True)
        page.goto((book['html'] / 'search.html').as_uri() + '?q=bilinear')
        page.wait_for_selector('#search-results li', timeout=20000)
        facts['search results'] = page.eval_on_selector_all(
            '#search-results li a', 'links => links.map(a => a.href)')
        browser.close()
    return dict(facts=facts, blocked=blocked, errors=errors)


def executed_notebooks(cache_dir):
    """Return {chapter name: executed notebook} from the book's jupyter-cache."""
    from jupyter_cache import get_cache
    cache = get_cache(str(cache_dir))
    return {Path(r.uri).stem: cache.get_cache_bundle(r.pk).nb
            for r in cache.list_cache_records()}


@pytest.mark.slow
def test_build_is_clean_and_executes_each_chapter_once(book):
    assert book['stderr'] == ''
    assert f'{len(CHAPTERS)} pages' in book['stdout']
    # MyST-NB found every chapter in the cache the book command filled.
    notebooks = executed_notebooks(book['cache'])
    assert sorted(notebooks) == sorted(CHAPTERS)
    assert not list(book['html'].parent.glob('.d2lfcn-book-*')), 'build folder left behind'


@pytest.mark.slow
def test_no_request_leaves_the_machine_and_no_script_fails(pages):
    assert pages['blocked'] == []
    assert pages['errors'] == []


@pytest.mark.slow
def test_every_page_has_a_screenshot(pages, book):
    for name in PAGES:
        shot = book['shots'] / f'{name}.png'
        assert shot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
@pytest.mark.parametrize('name', CHAPTERS)
def test_images_load_and_the_chapter_figures_are_shown(pages, name):
    facts = pages['facts'][name]
    assert all(image['width'] > 0 for image in facts['images']), facts['images']
    shown = {unquote(Path(urlsplit(i['src']).path).name) for i in facts['images']}
    text = (CHAPTER_DIR / f'{name}.md').read_text(encoding='utf-8')
    for target in IMAGE.findall(text):
        assert Path(target).name in shown, f'{name}: {target} not shown'


@pytest.mark.slow
@pytest.mark.parametrize('name', CHAPTERS)
def test_formulas_are_rendered(pages, name):
    facts = pages['facts'][name]
    assert not TEX_COMMAND.search(facts['prose']), TEX_COMMAND.findall(facts['prose'])[:5]
    assert not DOLLAR_MATH.search(facts['prose']), DOLLAR_MATH.findall(facts['prose'])[:5]
    # One <math> element per formula of the markdown source.
    tokens = MarkdownIt('commonmark').use(dollarmath_plugin).enable('table').parse(
        (CHAPTER_DIR / f'{name}.md').read_text(encoding='utf-8'))
    formulas = sum(t.type.startswith('math') for token in tokens
                   for t in [token] + (token.children or []))
    assert facts['maths'] == formulas


@pytest.mark.slow
@pytest.mark.parametrize('name', CHAPTERS)
def test_every_cell_that_prints_shows_its_output(pages, book, name):
    nb = executed_notebooks(book['cache'])[name]
    code = [c for c in nb.cells if c.cell_type == 'code'
            and 'remove-cell' not in c.metadata.get('tags', [])]
    cells = pages['facts'][name]['cells']
    assert len(cells) == len(code)
    for cell, page_cell in zip(code, cells):
        shown = [o for o in cell.outputs if 'scrapbook' not in o.get('metadata', {})]
        images = sum('image/png' in o.get('data', {}) for o in shown)
        assert (page_cell['output'] is not None) == bool(shown), cell.source
        assert page_cell['images'] == images, cell.source
        for output in shown:
            if output.output_type == 'stream':  # the last printed line is on the page
                last = output.text.strip().splitlines()[-1].strip()
                assert last in page_cell['output'], (cell.source, last)
    assert sum(c['output'] is not None for c in cells) > 0


GLUE_ROLE = re.compile(r'\{glue:text\}`([^`]+)`')


def glued(nb):
    """Return {name: text/plain} of every value the notebook's cells glued."""
    values = {}
    for cell in nb.cells:
        for output in cell.get('outputs', []):
            name = output.get('metadata', {}).get('scrapbook', {}).get('name')
            if name is not None:
                plain = [v for k, v in output['data'].items() if k.endswith('text/plain')]
                values[name] = plain[0]
    return values


def formatted(plain, spec):
    """Format a glued text/plain value as `{glue:text}` does: a number by `spec`."""
    value = ast.literal_eval(plain)
    return format(float(value) if spec.endswith(('f', '%', 'e', 'g')) else value, spec)


@pytest.mark.slow
@pytest.mark.parametrize('name', CHAPTERS)
def test_numbers_in_the_text_are_those_the_page_computed(pages, book, name):
    """Every glued number on the page is its cell's value, in the source's order."""
    values = glued(executed_notebooks(book['cache'])[name])
    expected = []
    for role in GLUE_ROLE.findall((CHAPTER_DIR / f'{name}.md').read_text(encoding='utf-8')):
        key, _, spec = role.partition(':')
        assert key in values, f'{name}: {key} is never glued by a cell'
        expected.append(formatted(values[key], spec))
    assert pages['facts'][name]['pasted'] == expected


@pytest.mark.slow
def test_library_source_is_shown_highlighted_with_its_file(pages):
    [cell] = [c for c in pages['facts']['conv-layer']['cells']
              if c['input'].strip() == 'd2lfcn.show_source(d2lfcn.corr2d)']
    note, code = cell['output'].split('\n', 1)
    line = inspect.getsourcelines(d2lfcn.corr2d)[1]
    assert note.strip() == f'd2lfcn.conv.corr2d, from d2lfcn/conv.py, line {line}:'
    assert code.strip() == inspect.getsource(d2lfcn.corr2d).strip()
    assert cell['keywords'] >= 3  # def, for, return: highlighted as Python


@pytest.mark.slow
def test_sidebar_and_previous_next_follow_the_reading_order(pages, book):
    urls = [(book['html'] / f'{name}.html').as_uri() for name in CHAPTERS]
    for i, name in enumerate(CHAPTERS):
        facts = pages['facts'][name]
        assert [u.split('#')[0] for u in facts['sidebar']] == urls, name
        assert facts['prev'] == (urls[i - 1] if i else None)
        assert facts['next'] == (urls[i + 1] if i + 1 < len(urls) else None)


@pytest.mark.slow
def test_internal_links_resolve_to_pages_and_anchors(pages, book):
    checked = 0
    for name in PAGES:
        for link in pages['facts'][name]['links']:
            parts = urlsplit(link)
            if parts.scheme != 'file':
                assert parts.scheme in ('http', 'https', 'mailto'), link
                continue
            target = Path(unquote(parts.path))
            assert target.is_file(), f'{name}: {link}'
            assert book['html'] in target.parents, f'{name}: {link} leaves the book'
            if parts.fragment and target.suffix == '.html':
                ids = re.findall(r'\sid="([^"]+)"', target.read_text(encoding='utf-8'))
                assert unquote(parts.fragment) in ids, f'{name}: {link}'
            checked += 1
    assert checked > 10 * len(CHAPTERS)


@pytest.mark.slow
def test_search_finds_the_chapters(pages, book):
    found = {Path(urlsplit(u).path).name for u in pages['facts']['search results']}
    assert 'transposed-conv.html' in found


# The command itself, on a tiny book of its own.

def tiny_book(folder, first='print(21 * 2)', second='x = 1\nprint(x)'):
    folder.mkdir(exist_ok=True)
    (folder / 'index.md').write_text(textwrap.dedent('''\
        # Tiny

        Read [First](first.md), then [Second](second.md).
        '''))
    (folder / 'first.md').write_text(f'# First\n\nSome text, $a^2$.\n\n```python\n{first}\n```\n')
    (folder / 'second.md').write_text(f'# Second\n\n```python\n{second}\n```\n')
    return folder


def executed(stdout):
    return re.findall(r'^executing .*?(\w+)\.md', stdout, re.M)


@pytest.mark.slow
def test_rebuild_runs_only_the_edited_chapter_and_a_failure_keeps_the_old_book(tmp_path):
    chapters = tiny_book(tmp_path / 'chapters')
    args = ['--chapters-dir', chapters, '--out-dir', tmp_path / 'html',
            '--cache-dir', tmp_path / 'cache', '--fast']
    assert executed(book_command(*args, tmp=tmp_path).stdout) == ['index', 'first', 'second']
    assert '42' in (tmp_path / 'html' / 'first.html').read_text()
    # New code in one chapter, new prose in another: only the code runs again.
    tiny_book(chapters, first='print(6 * 7 + 1)')
    (chapters / 'second.md').write_text((chapters / 'second.md').read_text() + '\nMore prose.\n')
    assert executed(book_command(*args, tmp=tmp_path).stdout) == ['first']
    assert '43' in (tmp_path / 'html' / 'first.html').read_text()
    before = (tmp_path / 'html' / 'second.html').read_text()
    assert 'More prose.' in before

    tiny_book(chapters, first='print(6 * 7 + 1)', second='x = 1\ny = {}\nprint(y["missing"])')
    proc = book_command(*args, tmp=tmp_path, check=False)
    assert proc.returncode == 2
    # second.md: line 1 title, 2 blank, 3 fence, 4 x = 1, 5 y = {}, 6 print(...)
    assert proc.stderr == f"error: {chapters / 'second.md'}, line 6: KeyError: 'missing'\n"
    assert executed(proc.stdout) == ['second']
    assert (tmp_path / 'html' / 'second.html').read_text() == before
    assert not list(tmp_path.glob('.d2lfcn-book-*')), 'build folder left behind'


def test_missing_figure_and_foreign_out_dir_fail_before_anything_runs(tmp_path):
    chapters = tiny_book(tmp_path / 'chapters')
    with open(chapters / 'first.md', 'a') as f:
        f.write('\n![A figure](../img/nowhere.png)\n')
    env = dict(HOME=str(tmp_path), D2LFCN_DATA=str(tmp_path / 'data'))
    book = ['d2lfcn.book', '--chapters-dir', str(chapters), '--cache-dir',
            str(tmp_path / 'cache')]
    code, out, err = run_forked([*book, '--out-dir', str(tmp_path / 'html')], env)
    assert code == 2 and out == ''
    assert err.startswith(f"error: {chapters / 'first.md'}, line 9: image "
                          '../img/nowhere.png not found')
    assert err.count('\n') == 1 and not (tmp_path / 'html').exists()

    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    tiny_book(chapters)
    code, _, err = run_forked([*book, '--out-dir', str(mine)], env)
    assert code == 2 and 'is not a book built by d2lfcn.book' in err
    assert (mine / 'notes.txt').read_text() == 'keep me'


@pytest.mark.slow
def test_a_formula_that_cannot_be_rendered_fails_the_build_at_its_paragraph(tmp_path):
    chapters = tiny_book(tmp_path / 'chapters')
    with open(chapters / 'second.md', 'a') as f:
        f.write('\nThe last formula,\n$\\frac{1}{\\foo{x}}$, fails.\n')
    proc = book_command('--chapters-dir', chapters, '--out-dir', tmp_path / 'html',
                        '--cache-dir', tmp_path / 'cache', tmp=tmp_path, check=False)
    assert proc.returncode == 2 and not (tmp_path / 'html').exists()
    # second.md: 1 title, 2 blank, 3-6 the block, 7 blank, 8-9 the paragraph
    assert proc.stderr == (f"error: {chapters / 'second.md'}, line 8: cannot render the "
                           'formula $\\frac{1}{\\foo{x}}$ as MathML: unknown \\foo\n')


def test_import_d2lfcn_loads_neither_the_book_builder_nor_its_toolchain():
    heavy = ('d2lfcn.book.build', 'd2lfcn.book.__main__', 'd2lfcn.book.notebook', 'sphinx',
             'myst_nb', 'jupyter_cache', 'jupytext', 'nbclient', 'IPython')
    code = f'import sys, d2lfcn\nprint([m for m in {heavy} if m in sys.modules])'
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert proc.stdout == '[]\n'


def test_formulas_become_mathml_when_the_book_is_built():
    """The book's Sphinx configuration turns TeX into MathML: no MathJax from the web."""
    from docutils import nodes
    from d2lfcn.book import conf
    mathml = conf._mathml(nodes.math(text='\\lceil n/32 \\rceil'), 'inline')
    assert mathml.startswith('<math') and '&#x02308;' in mathml  # the left ceiling
    assert '<mn>32</mn>' in mathml
    assert 'display="block"' in conf._mathml(nodes.math_block(text='a^2'), 'block')
