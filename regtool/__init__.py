"""regtool: inspect, copy, mirror, sign and verify container images.

The library is the product; ``regtool.cli`` is a thin shell over it.
"""

__version__ = "0.1.0"
