"""Exception types raised by the library.

Each is raised where the problem is found; the CLI and the MCP server turn them
into one clear message at the edge.
"""


class MMSearchError(Exception):
    """Base class for every error mmsearch raises on purpose."""

    def __str__(self) -> str:
        # A message may quote a file name that is not UTF-8 (lone surrogates): it must
        # still be writable to JSON, Milvus and a terminal wherever it is shown.
        from mmsearch.pathnames import printable  # pathnames imports this module

        return printable(super().__str__())


class ConfigurationError(MMSearchError):
    """A setting is missing, malformed or contradicts another."""


class ModelLoadError(MMSearchError):
    """Model weights or configuration could not be found or do not match the architecture."""


class ImageDecodeError(MMSearchError):
    """A file could not be read as an image."""


class ModelMismatchError(MMSearchError):
    """A collection was filled by one embedding model and is used with another."""


class CollectionNotFoundError(MMSearchError):
    """The named collection does not exist."""


class StoreError(MMSearchError):
    """The vector database refused or failed an operation."""


class InvalidQueryError(MMSearchError):
    """A search or rerank request is malformed (empty, wrong types, out of range)."""


class AccessDeniedError(MMSearchError):
    """A path lies outside the configured allowed roots."""


class JobNotFoundError(MMSearchError):
    """No index job has this id (in this process or in the data directory's records)."""


class RerankError(MMSearchError):
    """The reranker failed or is not configured."""


class CaptionError(MMSearchError):
    """Captions were asked for where they cannot be made or stored."""


class DatasetError(MMSearchError):
    """A benchmark directory lacks a file or holds annotations that do not parse."""


class WatchError(MMSearchError):
    """A folder cannot be watched (missing, not a folder) or is not on the watch list."""
