"""Install d2lfcn: `pip install -e '.[cpu]'` (or `.[cu112]` for CUDA 11.2; add `book` for the book, `onnx` for ONNX)."""
from setuptools import find_packages, setup

# python -m d2lfcn.book and python -m d2lfcn.notebooks: jupytext reads the
# chapters as notebooks, nbclient + ipykernel run them, jupyter-cache keeps the
# outputs, Sphinx + MyST-NB + the book theme write the HTML, latex2mathml turns
# formulas into MathML (no MathJax from the web), playwright drives the system
# Chromium for --screenshots and the browser test.
BOOK = ['jupytext==1.19.6', 'nbclient==0.11.0', 'ipykernel==7.4.0', 'jupyter-cache==1.0.1',
        'sphinx==9.0.4', 'myst-nb==1.4.0', 'sphinx-book-theme==1.4.0',
        'latex2mathml==3.81.1', 'playwright==1.65.2']

# python -m d2lfcn.export --format onnx and python -m d2lfcn.predict --onnx.
# One pair installs beside MXNet's numpy<2 pins on every supported Python
# (3.8 to 3.12): onnxruntime 1.17.3 wants numpy>=1.24.2 on 3.11, onnx 1.15
# has no 3.12 wheel, and onnx >= 1.19 lacks the onnx.mapping MXNet's exporter uses.
ONNX = ['onnx==1.16.2', 'onnxruntime==1.18.1']

setup(
    name='d2lfcn',
    version='0.1.0',
    description='Fully Convolutional Networks for semantic segmentation, '
                'a Dive-into-Deep-Learning style chapter package on MXNet/Gluon',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['d2lfcn', 'd2lfcn.*']),
    # MXNet 1.9.1 needs numpy<2, which has no wheels for Python 3.13: pip
    # refuses 3.13 with one line instead of compiling numpy for pages.
    python_requires='>=3.8,<3.13',
    install_requires=[
        # MXNet 1.9.1 uses np.bool and friends, removed in numpy 1.24;
        # d2lfcn/compat.py restores them, but numpy 1.23 is the tested path
        # where it has wheels. Python 3.12 has no numpy 1.23 wheels: 1.26 there.
        # No numpy line for 3.13: pip collects requirements before it checks
        # python_requires, and would compile numpy 1.26 first, for minutes.
        'numpy>=1.21,<1.24; python_version < "3.12"',
        'numpy>=1.26,<2; python_version == "3.12"',
        # MXNet and gluoncv import distutils, gone from Python 3.12's standard
        # library; setuptools provides it again.
        'setuptools>=60; python_version >= "3.12"',
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
        # libjpeg-turbo with strict decoding (>=1.7.2): data libjpeg would only
        # warn about and patch with grey ("Corrupt JPEG data") raises instead.
        'simplejpeg>=1.7.2',
        'tqdm>=4.60',
    ],
    # The book's style sheet (python -m d2lfcn.book); its Sphinx configuration,
    # d2lfcn/book/conf.py, is installed with the package's modules.
    package_data={'d2lfcn.book': ['static/*']},
    extras_require={
        # Both builds provide the `mxnet` module, so the user picks one.
        'cpu': ['mxnet==1.9.1'],
        'cu112': ['mxnet-cu112==1.9.1'],
        'book': BOOK,
        'onnx': ONNX,
        # The book's browser test builds the book, so tests need all of it.
        'test': ['pytest>=7'] + BOOK + ONNX,
    },
)
