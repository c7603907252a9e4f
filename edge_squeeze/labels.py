"""Class names: plain files (one name a line) and Caffe's ``synset_words.txt`` form.

The ImageNet-1k names shipped in ``data/imagenet_synset_words.txt`` were built from timm's
``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt`` (Apache-2.0): the standard class order
used by torchvision and Caffe checkpoints, wnid first, then WordNet lemmas.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import EdgeSqueezeError

_WNID = re.compile(r"^n\d{8}$")
_IMAGENET_FILE = Path(__file__).with_name("data") / "imagenet_synset_words.txt"


@dataclasses.dataclass(frozen=True)
class Labels:
    """Display names and, when known, stable class ids (ImageNet wnids such as ``n02111889``)."""

    names: List[str]
    ids: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.ids is not None and len(self.ids) != len(self.names):
            raise EdgeSqueezeError("labels: ids and names differ in length")

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"class_{index}"

    def index_of_id(self) -> Dict[str, int]:
        return {cid: i for i, cid in enumerate(self.ids or [])}

    def to_dict(self) -> Dict[str, Any]:
        return {"names": list(self.names), "ids": list(self.ids) if self.ids else None}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Labels:
        return cls(names=[str(n) for n in data["names"]], ids=data.get("ids"))

    @classmethod
    def numbered(cls, num_classes: int) -> Labels:
        return cls(names=[f"class_{i}" for i in range(num_classes)])


def parse_labels(lines: Sequence[str]) -> Labels:
    """Parse one name a line, or ``wnid name, synonym, ...`` lines (then the wnid becomes the id).

    In the synset form the display name is the first synonym: ``n02111889 Samoyed, Samoyede``
    gives id ``n02111889`` and name ``Samoyed``.
    """
    rows = [line.strip() for line in lines if line.strip()]
    if not rows:
        raise EdgeSqueezeError("labels file is empty: give one class name a line")
    first_words = [row.split(None, 1)[0] for row in rows]
    if all(_WNID.match(word) for word in first_words):
        names = []
        for row in rows:
            parts = row.split(None, 1)
            names.append(parts[1].split(",")[0].strip() if len(parts) > 1 else parts[0])
        return Labels(names=names, ids=first_words)
    return Labels(names=rows)


def load_labels(path: Union[str, os.PathLike[str]]) -> Labels:
    path = Path(path)
    if not path.is_file():
        raise EdgeSqueezeError(
            f"labels file not found: {path} (one class name a line, or synset_words.txt form)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeSqueezeError(f"labels file {path} is not UTF-8 text: {exc.reason}") from exc
    return parse_labels(text.splitlines())


def imagenet_labels() -> Labels:
    """The 1000 ImageNet-1k classes in the order of torchvision's and Caffe's checkpoints."""
    return load_labels(_IMAGENET_FILE)
