"""AMIR bundle: the package the bundle's configs import (``$import scripts``)."""
