"""The one exception the data layer raises for bad data or bad data configuration."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset cannot be read, normalized or cut into pools as configured.

    The message always says where (file and line, or hub id, split and row) and, where there is
    one, which config key fixes it. Subclasses ValueError so callers that validate configs with
    ``except ValueError`` also catch it.
    """
