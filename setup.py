"""Builds the native datapath (Cython). Everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "native.fanout",
                ["native/fanout.pyx"],
                include_dirs=["native"],
                depends=["native/datapath.h"],
                extra_compile_args=["-O2", "-Wno-unused-function"],
                define_macros=[("_GNU_SOURCE", "1")],
            )
        ],
        compiler_directives={"language_level": "3"},
    )
)
