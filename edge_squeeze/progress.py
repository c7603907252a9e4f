"""Progress bars: tqdm when installed (the export extra), otherwise plain start/end log lines."""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("edge_squeeze")


def progress_bar(
    iterable: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "it"
) -> Iterable[T]:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        log.info("%s ...", desc)
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
