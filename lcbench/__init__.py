"""The application layer: the ``bench`` command line, the dashboard, user studies and the regression check.

Everything a person runs lives here; it may import every layer below (core ``bench``, the region
mechanism, the method and metric plugins, ``reports``).
"""
