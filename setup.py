"""Packaging glue: the repository root *is* the ``implicity`` package.

The root is the QGIS plugin folder (deployed as ``implicity/``), so headless code imports the same
modules as ``implicity.core``, ``implicity.training`` and ``implicity.implicity_qgis``. Nothing named
``core`` or ``training`` ever lands at the top of site-packages.
"""
from setuptools import find_packages, setup

SUBPACKAGES = find_packages(".", include=["core*", "training*", "implicity_qgis*"])

setup(
    package_dir={"implicity": "."},
    packages=["implicity"] + [f"implicity.{name}" for name in SUBPACKAGES],
    package_data={
        "implicity": ["metadata.txt", "icon.png", "models/*", "configs/*.yaml", "data/*"],
        **{f"implicity.{name}": ["*.yaml", "configs/*.yaml"] for name in SUBPACKAGES},
    },
)
