"""What every benchmark reader produces: a gallery of images and a list of queries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmsearch.errors import DatasetError

Task = Literal["composed", "text_to_image"]


@dataclass(frozen=True)
class Query:
    """One evaluation query.

    ``reference`` is the gallery id of the reference image of a composed query (``None``
    for text-to-image). ``targets`` are the gallery ids that count as correct; the first is
    the annotated target (CIRCO's ``target_img_id``), the rest further ground truths. An
    empty ``targets`` means the split hides its ground truth (CIRR test1, CIRCO test).
    ``subset`` is CIRR's ``img_set.members`` minus the reference.
    """

    id: str
    text: str
    reference: str | None = None
    reference_path: Path | None = None
    targets: tuple[str, ...] = ()
    subset: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    """A loaded benchmark split: gallery images (id -> path, in the official order) and queries.

    ``exclude_reference``: the reference image is removed from its query's candidates
    (CIRR's protocol; also applied to CIRCO, see :mod:`.circo`).
    """

    name: str
    split: str
    task: Task
    gallery: dict[str, Path]
    queries: list[Query]
    exclude_reference: bool = False
    has_ground_truth: bool = True
    category: str | None = None

    @property
    def title(self) -> str:
        suffix = f"/{self.category}" if self.category else ""
        return f"{self.name}{suffix} ({self.split})"


def require_file(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DatasetError` showing the layout."""
    if not path.is_file():
        raise DatasetError(f"missing file {path}\nexpected layout:\n{layout}")
    return path


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"missing directory {path}\nexpected layout:\n{layout}")
    return path


def load_json(path: Path, layout: str) -> Any:
    require_file(path, layout)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc


def field_of(entry: Any, key: str, path: Path, index: int) -> Any:
    """``entry[key]``, or a :class:`DatasetError` naming the file and the entry."""
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{path}: entry {index} has no field {key!r}")
    return entry[key]
