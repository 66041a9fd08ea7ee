"""Check the chapters' sources: no pasted outputs, the book's shape, no retyped library.

Every chapters/*.md is picked up by glob, so a new chapter is checked without
editing this file. Allowed fences are ```python, ```bash and ```text-diagram
(a drawn figure, never copied program output). The chapters are *run* once
per suite, by tests/test_book.py's build of the book (fast mode), which
stops at a failing cell with its chapter and line.
"""
import ast
import re
from pathlib import Path

import pytest

import d2lfcn

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_DIR = ROOT / 'chapters'
CHAPTERS = sorted(CHAPTER_DIR.glob('*.md'))
ALLOWED_FENCES = {'python', 'bash', 'text-diagram'}
FENCE = re.compile(r'^(\s*)(```|~~~)\s*([^`\s]*)')
REPL_OUTPUT = re.compile(r'^\s*(>>>|Out\s*\[\d*\]|In\s*\[\d*\]:)')
IMAGE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)')


def parse_blocks(text):
    """Return (fenced blocks as (lang, first code line, code), problems)."""
    blocks, problems = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            if REPL_OUTPUT.match(lines[i]):
                problems.append(f'line {i + 1}: looks like pasted REPL output')
            i += 1
            continue
        indent, marker, lang = match.groups()
        if indent:
            problems.append(f'line {i + 1}: indented fence')
        if lang not in ALLOWED_FENCES:
            problems.append(f'line {i + 1}: fence {lang or "(none)"!r} is not one '
                            f'of {sorted(ALLOWED_FENCES)}; outputs are not pasted')
        start = i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(marker):
            i += 1
        if i == len(lines):
            problems.append(f'line {start}: fence never closed')
        code = '\n'.join(lines[start:i]) + '\n'
        if lang == 'python':
            for k, line in enumerate(lines[start:i]):
                if REPL_OUTPUT.match(line):
                    problems.append(f'line {start + k + 1}: REPL prompt or '
                                    'output inside a python block')
        blocks.append((lang, start + 1, code))
        i += 1
    return blocks, problems


def headings(text):
    """Return the '## ' section titles outside code blocks, in order."""
    blocks, _ = parse_blocks(text)
    in_code = set()
    for _, first, code in blocks:
        in_code.update(range(first - 1, first + code.count('\n') + 1))
    return [line[3:].strip() for n, line in enumerate(text.splitlines(), 1)
            if line.startswith('## ') and n not in in_code]


def chapter_id(path):
    return path.name


def test_the_convolution_chapters_exist():
    names = {p.name for p in CHAPTERS}
    assert {'conv-layer.md', 'transposed-conv.md'} <= names


def test_parser_flags_pasted_outputs():
    bad = ('# t\n```python\nprint(1)\n```\n```\n1\n```\n'
           '>>> x = 1\n```python\n>>> 2\n```\n```text\n[[19. 25.]]\n```\n')
    _, problems = parse_blocks(bad)
    assert len(problems) == 4, problems
    good = '```python\nx = 1\n```\n```text-diagram\n a -> b\n```\n'
    blocks, problems = parse_blocks(good)
    assert problems == [] and [b[0] for b in blocks] == ['python', 'text-diagram']
    assert blocks[0][1] == 2  # line of the first code line, for tracebacks
    assert headings('## A\n```python\n## not a heading\n```\n## B\n') == ['A', 'B']


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_chapter_has_no_pasted_outputs(chapter):
    _, problems = parse_blocks(chapter.read_text(encoding='utf-8'))
    assert not problems, f'{chapter.name}: ' + '; '.join(problems)


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_chapter_ends_with_summary_and_exercises(chapter):
    titles = headings(chapter.read_text(encoding='utf-8'))
    assert titles[-2:] == ['Summary', 'Exercises'], titles


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_chapter_images_exist(chapter):
    for target in IMAGE.findall(chapter.read_text(encoding='utf-8')):
        assert (CHAPTER_DIR / target).is_file(), f'{chapter.name}: {target} missing'


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_chapter_imports_and_does_not_retype_the_library(chapter):
    blocks, _ = parse_blocks(chapter.read_text(encoding='utf-8'))
    code = [c for lang, _, c in blocks if lang == 'python']
    assert code, f'{chapter.name} has no python blocks'
    assert any(re.search(r'^\s*(import d2lfcn|from d2lfcn)', c, re.M) for c in code)
    public = {n for n in dir(d2lfcn) if not n.startswith('_')}
    for c in code:
        assert 'getsource(' not in c, (
            f'{chapter.name}: show library code with d2lfcn.show_source, which '
            'the book renders as highlighted code')
        for node in ast.walk(ast.parse(c)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in public, (
                    f'{chapter.name} re-defines d2lfcn.{node.name}; show it '
                    'with d2lfcn.show_source instead')


# --- editing rules of the book (issue: text that agrees with its outputs) ------

# Words of prose (outside code blocks and display math) each page may have.
WORD_LIMITS = {'fcn.md': 3000, 'transposed-conv.md': 2000,
               'semantic-segmentation-and-dataset.md': 2000,
               'training-at-scale.md': 1500}
CHAPTER_LIMIT, BOOK_LIMIT, MAX_EXERCISES = 4500, 16000, 8
WORD = re.compile(r"[A-Za-z0-9][\w'’.-]*")
# A number with two or more decimals in prose is a measurement: a cell must
# compute it and glue it in. These are quoted from the sources, not measured.
# fcn.md: D2L's MXNet notebook of its FCN section (d2l-ai/d2l-en-colab,
# chapter_computer-vision/fcn.ipynb): release 0.17.1's build and an earlier one.
QUOTED = {'fcn.md': {'0.337', '0.889', '0.853', '0.327', '0.892', '0.849'},
          'semantic-segmentation-and-dataset.md': {'0.485', '0.456', '0.406', '0.229',
                                                   '0.224', '0.225'}}
DECIMAL = re.compile(r'(?<![\w.$])\d+\.\d{2,}(?![\w.])')


def prose(text):
    """Return `text` without fenced blocks, display math, inline math and code spans."""
    blocks, _ = parse_blocks(text)
    lines = text.splitlines()
    for _, first, code in blocks:
        for n in range(first - 2, first + code.count('\n')):
            lines[n] = ''
    text = '\n'.join(lines)
    text = re.sub(r'\$\$.*?\$\$', ' ', text, flags=re.S)
    text = re.sub(r'\{glue:[a-z]*\}`[^`]*`', ' ', text)
    text = re.sub(r'\$[^$\n]+\$', ' ', text)
    return re.sub(r'`[^`\n]*`', ' ', text)


def words(path):
    text = path.read_text(encoding='utf-8')
    text = re.sub(r'^(```|~~~).*?^\1\s*$', '', text, flags=re.S | re.M)
    text = re.sub(r'\$\$.*?\$\$', '', text, flags=re.S)
    return len(WORD.findall(text))


def test_chapters_keep_to_their_length():
    counts = {p.name: words(p) for p in CHAPTERS}
    for name, count in counts.items():
        assert count <= WORD_LIMITS.get(name, CHAPTER_LIMIT), (name, count)
    assert sum(counts.values()) <= BOOK_LIMIT, counts


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_prose_quotes_no_measured_number(chapter):
    text = prose(chapter.read_text(encoding='utf-8'))
    typed = set(DECIMAL.findall(text)) - QUOTED.get(chapter.name, set())
    assert not typed, f'{chapter.name}: glue these from the cells that compute them: {typed}'
    assert 'text was written from' not in text


@pytest.mark.parametrize('chapter', CHAPTERS, ids=chapter_id)
def test_at_most_eight_exercises(chapter):
    text = chapter.read_text(encoding='utf-8')
    exercises = text[text.rindex('\n## Exercises'):]
    assert len(re.findall(r'^\d+\. ', exercises, re.M)) <= MAX_EXERCISES


def test_prose_filter_leaves_out_code_and_math():
    text = ('Loss 0.321 in prose.\n\n```python\nx = 0.123\n```\n\n$0.456$ and '
            '`0.789`, $$\n0.111\n$$ and {glue:text}`miou:.3f`.\n')
    assert DECIMAL.findall(prose(text)) == ['0.321']
