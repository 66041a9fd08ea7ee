"""Hold the book-only code: the book's builder and the chapters' helpers, not the library.

`python -m d2lfcn.book` (`__main__`) builds the HTML book with `build`, which
reads the chapters as notebooks with `notebook`. For the chapters, `display`
shows library source, and `standin` (with `patches`) gives
them a classifier where ImageNet's weights are missing. Importing this package
loads none of its modules; `import d2lfcn` loads only the chapters' helpers it
re-exports. Explained in chapters/index.md.
"""
