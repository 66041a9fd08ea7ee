"""Install d2lfcn: `pip install -e '.[cpu]'` (or `.[cu112]` for CUDA 11.2)."""
from setuptools import find_packages, setup

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
        # libjpeg-turbo with strict decoding (>=1.7.2): data libjpeg would only
        # warn about and patch with grey ("Corrupt JPEG data") raises instead.
        'simplejpeg>=1.7.2',
        'tqdm>=4.60',
    ],
    extras_require={
        # Both builds provide the `mxnet` module, so the user picks one.
        'cpu': ['mxnet==1.9.1'],
        'cu112': ['mxnet-cu112==1.9.1'],
        # jupytext + nbclient + ipykernel: the test that runs a generated notebook.
        'test': ['pytest>=7', 'jupytext>=1.14', 'nbclient>=0.7', 'ipykernel>=6'],
    },
)
