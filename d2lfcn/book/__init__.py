"""Hold the book's own code: book-only, not the library.

`python -m d2lfcn.book` (`__main__`) builds the HTML book with `build`;
`notebook` reads chapters as Jupyter notebooks and runs them; `display`
shows library source in a chapter; `standin` (with `patches`) gives the
chapters a classifier where ImageNet's weights are missing. Importing this
package loads none of them, so `import d2lfcn` loads only what it
re-exports (`display`, `patches`, `standin`). Explained in chapters/index.md.
"""
