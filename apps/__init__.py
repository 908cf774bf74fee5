"""fabformer.apps: the applications on top of the foundation and the backends.

The command line (``cli`` and its ``cli_*`` plugins), the report, the design-space
explorer, the example data and the test graphs.  Nothing below this layer imports it.
"""
