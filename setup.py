"""Install d2lfcn: `pip install -e '.[cpu]'` (or `.[cu112]` for CUDA 11.2; add `book` for the book)."""
from setuptools import find_packages, setup

# python -m d2lfcn.book and python -m d2lfcn.notebooks: jupytext reads the
# chapters as notebooks, nbclient + ipykernel run them, jupyter-cache keeps the
# outputs, Sphinx + MyST-NB + the book theme write the HTML, latex2mathml turns
# formulas into MathML (no MathJax from the web), playwright drives the system
# Chromium for --screenshots and the browser test.
BOOK = ['jupytext==1.19.6', 'nbclient==0.11.0', 'ipykernel==7.4.0', 'jupyter-cache==1.0.1',
        'sphinx==9.0.4', 'myst-nb==1.4.0', 'sphinx-book-theme==1.4.0',
        'latex2mathml==3.81.1', 'playwright==1.65.2']

setup(
    name='d2lfcn',
    version='0.1.0',
    description='Fully Convolutional Networks for semantic segmentation, '
                'a Dive-into-Deep-Learning style chapter package on MXNet/Gluon',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['d2lfcn', 'd2lfcn.*']),
    python_requires='>=3.8',
    install_requires=[
        # MXNet 1.9.1 still uses np.bool / np.object, removed in numpy 1.24.
        'numpy>=1.21,<1.24',
        # The last gluoncv release; we use its SegmentationMetric as an
        # independent reference and the same model-zoo conventions.
        'gluoncv==0.10.5.post0',
        # gluoncv requires opencv-python, and both it and the headless build
        # install the same `cv2` folder: pin both to one version so whichever
        # is unpacked last leaves a consistent module behind.
        'opencv-python-headless==4.11.0.86',
        'opencv-python==4.11.0.86',
        'matplotlib>=3.5',
        'Pillow>=9',
        'tqdm>=4.60',
    ],
    # The book's Sphinx configuration and style sheet (python -m d2lfcn.book).
    package_data={'d2lfcn': ['_book/conf.py', '_book/static/*']},
    extras_require={
        # Both builds provide the `mxnet` module, so the user picks one.
        'cpu': ['mxnet==1.9.1'],
        'cu112': ['mxnet-cu112==1.9.1'],
        'book': BOOK,
        # The book's browser test builds the book, so tests need all of it.
        'test': ['pytest>=7'] + BOOK,
    },
)
