"""Build of the optional native extension; everything else is declared in pyproject.toml.

``sgxlaunch.cpu._paging`` (EWB/ELDU fast path) is optional: without a C compiler the install
still succeeds and the processor runs its Python leaves alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sgxlaunch.cpu._paging",
            ["src/sgxlaunch/cpu/_paging.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
