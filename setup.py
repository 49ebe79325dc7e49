"""Packaging for sasi-scipion: the SaSi engine (``sasi`` command) and its Scipion plugin."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ENGINE = ["torch>=2.0", "connected-components-3d>=3.10", "scipy>=1.7"]
"""What the engine (the ``sasi`` command) needs on top of the plugin: not needed in
Scipion's environment when the engine runs from its own (``SASI_ENV_ACTIVATION``)."""

setup(
    name="sasi-scipion",
    version="0.1.0",
    description=(
        "SaSi few-shot cryo-ET particle picking (self-augmented, self-interpreted "
        "deep learning) as a Scipion 3 plugin and a stand-alone 'sasi' command"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["sasi_scipion", "sasi_scipion.*"]),
    package_data={"sasi_scipion": ["protocols.conf", "*.png"]},
    include_package_data=True,
    install_requires=[  # the plugin, torch-free
        "numpy>=1.21",
        "mrcfile>=1.4",
        "scipion-pyworkflow>=3.10",
        "scipion-em>=3.10",
        "scipion-em-tomo>=3.10",
        "matplotlib>=3.5",
        "starfile>=0.5",
    ],
    extras_require={
        "engine": ENGINE,
        "test": [*ENGINE, "pytest>=7", "ruff>=0.4"],
        "bench": ["monai>=1.3"],
    },
    entry_points={
        "console_scripts": ["sasi = sasi_scipion.engine.cli:main"],
        "pyworkflow.plugin": ["sasi_scipion = sasi_scipion"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
