"""
The stand-in world certsync runs against, shared by the tests, the demo and
the benchmarks: Salt daemons and their pillar (``daemons``, ``fleet``), NPM's
side with the real certbot against pebble (``acme``), the mailcow look-alike
in Docker (``mailcow_stack``, ``docker/``), authoritative DNS (``knot``,
``nsd``), test certificates (``pki``) and the repo's loader modules imported
in-process (``loader``). Everything listens on loopback only.
"""
