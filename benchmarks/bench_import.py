"""Measure what `import d2lfcn` costs over `import mxnet` alone, in fresh processes.

Each round starts one interpreter per statement, in alternating order, and
times the import inside it (the interpreter's own start-up is left out). The
goal of the package: `import d2lfcn` within 0.3 s of `import mxnet`, since
d2lfcn's library imports MXNet anyway and no command module or pyplot.

    python benchmarks/bench_import.py            # 7 rounds
    python benchmarks/bench_import.py --rounds 15
"""
import argparse
import json
import statistics
import subprocess
import sys

STATEMENTS = {
    'mxnet': 'import mxnet',
    'd2lfcn': 'import d2lfcn',
    'd2lfcn + commands': 'import d2lfcn.train, d2lfcn.predict, d2lfcn.export',
}
TIMER = """
import json, sys, time
start = time.perf_counter()
exec({stmt!r})
seconds = time.perf_counter() - start
print(json.dumps({{'seconds': seconds, 'pyplot': 'matplotlib.pyplot' in sys.modules}}))
"""


def time_import(stmt):
    """Return (seconds, whether pyplot got imported) of `stmt` in a new interpreter."""
    out = subprocess.run([sys.executable, '-c', TIMER.format(stmt=stmt)], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result['seconds'], result['pyplot']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=7, help='fresh processes per statement')
    args = p.parse_args()
    times = {name: [] for name in STATEMENTS}
    pyplot = {}
    for r in range(args.rounds):
        names = list(STATEMENTS)
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds, pyplot[name] = time_import(STATEMENTS[name])
            times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f'{STATEMENTS[name]:52s} median {median[name]:.2f} s '
              f'(min {min(t):.2f}, max {max(t):.2f}); pyplot loaded: {pyplot[name]}')
    extra = median['d2lfcn'] - median['mxnet']
    print(f'import d2lfcn - import mxnet = {extra:+.2f} s (median of {args.rounds}); '
          'goal <= 0.30 s')


if __name__ == '__main__':
    main()
