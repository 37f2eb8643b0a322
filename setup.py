"""Build of the optional native extension; everything else is declared in pyproject.toml.

``sgxlaunch.cpu._paging`` (EWB/ELDU fast path) and ``sgxlaunch.cpu._cmac`` (AES-NI
AES-128-CMAC) are optional: without a C compiler (or, for ``_cmac``, off x86-64) the install still
succeeds and the processor runs its Python leaves and ``cryptography``'s CMAC alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sgxlaunch.cpu._paging",
            ["src/sgxlaunch/cpu/_paging.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "sgxlaunch.cpu._cmac",
            ["src/sgxlaunch/cpu/_cmac.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
