"""Sphinx configuration of the book that `python -m d2lfcn.book` builds.

The book command passes what changes between builds (the chapters in
reading order, the execution cache, the notebook reader) as overrides; see
d2lfcn/book/build.py. Everything here works offline: formulas become MathML when
the book is built, and the theme ships its own scripts and fonts.
"""
import html
import re

from docutils import nodes
from pygments.lexers.special import TextLexer
from sphinx.util import logging

logger = logging.getLogger('d2lfcn.book')

project = 'd2lfcn'
html_title = 'Fully Convolutional Networks'
author = 'the d2lfcn authors'
root_doc = 'index'

extensions = ['myst_nb']
source_suffix = {'.md': 'myst-nb'}
myst_enable_extensions = ['dollarmath']
myst_heading_anchors = 3           # [text](fcn.md#training) links to a section

# The book command executes stale chapters into this cache first, so Sphinx
# finds every chapter there; a chapter it cannot find would run here.
nb_execution_mode = 'cache'
nb_execution_raise_on_error = True
nb_execution_timeout = 1800
nb_merge_streams = True

html_theme = 'sphinx_book_theme'
html_theme_options = {
    'home_page_in_toc': True,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'navigation_with_keys': False,
    'footer_content_items': ['author.html'],
}
html_static_path = ['static']
html_css_files = ['book.css']
html_copy_source = False
# Search summaries fetch() each page, which browsers refuse for file:// pages;
# without them the search works from the file system too.
html_show_search_summary = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_math_renderer = 'mathml'

d2lfcn_chapters = []               # docnames in reading order, from chapters/index.md


def _mathml(node, display):
    """Return the formula of `node` as MathML; warn (the book fails) if it cannot be."""
    from latex2mathml.converter import convert
    latex = node.astext()
    try:
        mathml = convert(latex, display=display)
        unknown = re.findall(r'>(\\[A-Za-z]+)<', mathml)  # latex2mathml keeps them as text
        problem = unknown and 'unknown ' + ', '.join(unknown)
    except Exception as e:  # latex2mathml raises several kinds on bad input
        problem = f'{type(e).__name__} {e}'.strip()
    if problem:
        logger.warning(f'cannot render the formula ${latex}$ as MathML: {problem}',
                       location=node)
        return f'<code>{html.escape(latex)}</code>'
    return mathml


def _visit_math(self, node):
    self.body.append(_mathml(node, 'inline'))
    raise nodes.SkipNode


def _visit_displaymath(self, node):
    self.body.append(self.starttag(node, 'div', CLASS='math-display'))
    self.body.append(_mathml(node, 'block') + '</div>\n')
    raise nodes.SkipNode


def _add_toctree(app, docname, source):
    """Give the index a hidden table of contents: the sidebar and previous/next links."""
    if docname == app.config.root_doc and app.config.d2lfcn_chapters:
        source[0] += ('\n\n```{toctree}\n:hidden:\n\n'
                      + '\n'.join(app.config.d2lfcn_chapters) + '\n```\n')


def setup(app):
    app.add_config_value('d2lfcn_chapters', [], 'env')
    app.add_html_math_renderer('mathml', (_visit_math, None), (_visit_displaymath, None))
    app.add_lexer('text-diagram', TextLexer)   # the chapters' drawn figures
    app.connect('source-read', _add_toctree)
