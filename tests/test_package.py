"""Test the package's shape: what `import d2lfcn` loads, and no import cycles."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'd2lfcn'
COMMANDS = {'train', 'predict', 'export', 'figures', 'notebooks', '__main__', 'book.__main__'}


def _loaded_after(code):
    """Return the modules a fresh interpreter has loaded after running `code`."""
    out = subprocess.run([sys.executable, '-c', code + '\nimport sys\n'
                          'print("\\n".join(sorted(sys.modules)))'],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return set(out.split())


def test_import_loads_the_library_only():
    # `import d2lfcn` alone loads no MXNet; its first name loads the library.
    assert 'mxnet' not in _loaded_after('import d2lfcn')
    loaded = _loaded_after('import d2lfcn\nd2lfcn.get_fcn')
    ours = {m.split('.', 1)[1] for m in loaded if m.startswith('d2lfcn.')}
    assert {'model', 'loop', 'job', 'voc'} <= ours and not ours & COMMANDS
    assert 'mxnet' in loaded
    assert 'matplotlib.pyplot' not in loaded and 'tqdm' not in loaded


def test_commands_are_modules_again():
    code = ('import types, d2lfcn.predict as p, d2lfcn.train as t, d2lfcn.export as e\n'
            'assert all(isinstance(m, types.ModuleType) for m in (p, t, e)), (p, t, e)\n'
            'assert callable(p.main) and callable(t.main)')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def _module_name(path):
    """Return the dotted name of a file below d2lfcn/: 'voc', 'book.build', 'drawings'."""
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path):
    """Return the d2lfcn modules `path` imports, at any depth in the file."""
    name = _module_name(path).split('.')
    package = name if path.name == '__init__.py' else name[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) + 1 - node.level]  # `..` leaves a subpackage
            if node.module:
                names.add('.'.join(base + node.module.split('.')))
            else:
                names.update('.'.join(base + [a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('d2lfcn.'):
            names.add(node.module.split('.', 1)[1])
    return names


def test_no_import_cycles_and_no_command_imports_another():
    modules = {_module_name(p): _imports(p) for p in PACKAGE.rglob('*.py')
               if p != PACKAGE / '__init__.py'}
    for name, deps in modules.items():
        assert deps <= set(modules), (name, deps - set(modules))
        if name in COMMANDS:
            assert not deps & COMMANDS, f'command {name} imports command {deps & COMMANDS}'
        else:
            assert not deps & COMMANDS, f'library module {name} imports {deps & COMMANDS}'
    # Depth-first search for a cycle.
    state = {}

    def visit(name, path):
        if state.get(name) == 'open':
            raise AssertionError('import cycle: ' + ' -> '.join(path + [name]))
        if state.get(name) == 'done':
            return
        state[name] = 'open'
        for dep in sorted(modules[name]):
            visit(dep, path + [name])
        state[name] = 'done'

    for name in modules:
        visit(name, [])


def test_every_module_is_named_where_a_newcomer_looks():
    """chapters/index.md's module table and the package docstring name every module."""
    import re
    import d2lfcn
    modules = {_module_name(p) for p in PACKAGE.rglob('*.py')} - {''}
    index = (PACKAGE.parent / 'chapters' / 'index.md').read_text(encoding='utf-8')
    table = index[index.index('## Where the Code Lives'):index.index('## Running')]
    named = set(re.findall(r'`([\w.*]+)`', table))
    docstring = set(re.findall(r'\w+', d2lfcn.__doc__))
    for module in sorted(modules):
        packages = {'drawings': 'drawings.canvas', 'book.__main__': 'book'}  # their files
        in_table = module in named or packages.get(module) in named
        assert in_table, f'chapters/index.md does not name {module}'
        assert module.split('.')[-1] in docstring or module == 'book.__main__', \
            f'the package docstring does not name {module}'
