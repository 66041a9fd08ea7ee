"""Build the book from the chapters: book-only tooling, not the library.

`python -m d2lfcn.book` (`__main__`) builds the HTML book with `build`;
`notebook` reads chapters as Jupyter notebooks and runs them; `display`
shows library source in a chapter. Importing this package loads none of
them, so `import d2lfcn` stays light. Explained in chapters/index.md.
"""
