"""sgxlaunchd: the platform as a service on a Unix domain socket (``docs/service.md``).

One process holds the machine and the platform (:mod:`sgxlaunch.service.host`), serves the
HTTP/1.1 JSON API of ``docs/openapi.json`` (:mod:`sgxlaunch.service.app`) on a Unix socket
(:mod:`sgxlaunch.service.server`), and authorizes each request by the peer credentials of the
connection (:mod:`sgxlaunch.service.config`). :mod:`sgxlaunch.service.client` is the client the
command line uses to forward its platform commands. This package is an edge (layer 8): it touches
sockets, files, the clock and the environment; nothing in the core imports it.

Importing this package imports nothing else: the command line imports
:mod:`sgxlaunch.service.client` and :mod:`sgxlaunch.service.lock` only.
"""
