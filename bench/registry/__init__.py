"""The parts of bench/registry_scale.py: what is measured and with what settings
(config), the server side (server: adapters uploaded over the admin API, HTTP calls, the
server process's CPU time), the store opened in this process (store), the timing
schedule (measure), and the tables and BENCHMARKS.md section (report) and plot (plot).

A top-level package because bench/ is first on sys.path when the script runs; its
modules import each other relatively and the shared bench helpers as ``common``.
"""
