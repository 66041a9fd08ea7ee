"""Build the book, every chapter executed, as static offline HTML: `python -m d2lfcn.book`.

Explained in chapters/index.md.
"""
import os
import time

from ..cli import ArgumentParser, run_cli
from .build import build_book, screenshot_pages

__all__ = []  # a command: nothing for `import d2lfcn`


def main(argv=None):
    """Build the book; see --help."""
    p = ArgumentParser(
        prog='python -m d2lfcn.book',
        description='Execute every chapter in chapters/ (in the reading order of '
                    'chapters/index.md) and write the book as static HTML that works '
                    'offline. Outputs are cached per chapter, so a rebuild runs only the '
                    'chapters that changed. Needs the book extra: '
                    "pip install -e '.[cpu,book]'.")
    p.add_argument('--out-dir', default=os.path.join('_build', 'html'),
                   help='folder for the book, replaced when the build succeeds '
                        '(default: %(default)s)')
    p.add_argument('--chapters-dir', default='chapters',
                   help='folder holding index.md and the chapters (default: %(default)s)')
    p.add_argument('--cache-dir', default=os.path.join('_build', 'jupyter_cache'),
                   help='execution cache (jupyter-cache) kept between builds '
                        '(default: %(default)s)')
    p.add_argument('--fast', action='store_true',
                   help='run the chapters with D2LFCN_FAST=1: tiny sizes, for tests '
                        '(default: off)')
    p.add_argument('--screenshots', metavar='DIR',
                   help='also save a full-page screenshot of every page into DIR, taken '
                        'with headless Chromium (default: none)')
    args = p.parse_args(argv)
    start = time.time()
    pages = build_book(args.chapters_dir, args.out_dir, args.cache_dir, fast=args.fast)
    print(f'{len(pages)} pages in {time.time() - start:.0f} s: open '
          f'{os.path.join(args.out_dir, "index.html")}, or run '
          f'python -m http.server -d {args.out_dir}')
    if args.screenshots:
        paths = screenshot_pages(args.out_dir, pages, args.screenshots)
        print(f'{len(paths)} screenshots in {args.screenshots}')


if __name__ == '__main__':
    run_cli(main)
