"""Shared test support, one package for every test directory.

* :mod:`tests.support.keys` — the shared vectors' real SGX signing keys, by role (one loader);
* :mod:`tests.support.clock` — the fixed instants the tests use and a settable clock;
* :mod:`tests.support.cpu` — processors, signed images, programs, a small reclaimer;
* :mod:`tests.support.driver` — driver platforms and raw ioctl calls;
* :mod:`tests.support.policy` — owner roots, policies and platform-mode documents in memory;
* :mod:`tests.support.platform` — an owner with a whole ``Platform`` in a memory store;
* :mod:`tests.support.cli` — running the command line in-process;
* :mod:`tests.support.cli_json` — reading the one JSON object of a `--json` command;
* :mod:`tests.support.json_cases` — every `--json` command run to succeed and to fail;
* :mod:`tests.support.dcap` — the DCAP vector quotes, collateral and their expected results;
* :mod:`tests.support.sdk` — a builder of small Intel SGX SDK enclaves (ELF + `.note.sgxmeta`).
"""
