"""The index a running server answers from, switched to the newer one when its folder is rebuilt or extended.

``gadms serve INDEX`` keeps answering from the index it opened until
``INDEX/index.json`` changes (another inode, size or modification time: every
commit of ``gadms index`` and every swap of a rebuilt index, see
:mod:`gadms.search.publish`). It looks at most every ``every`` seconds, when a
request comes. It then opens the new index and, when its model has other
weights (a retrain promoted a new champion and the index was rebuilt for it),
loads that model; the pair is replaced in one assignment, so a request
answers wholly from the old pair or wholly from the new one, and requests in
flight finish on the old one. While the new one loads, other requests are
answered from the old one. A new index that cannot be served (damaged, or
another model than an explicit ``--model``) leaves the old one in service,
with one warning line on stderr per change.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gadms.search.index import SearchIndex, meta_stamp, open_index
from gadms.search.model import SearchError

CHECK_EVERY = 2.0


class LiveIndex:
    """An opened index and its model, replaced by the newer ones at the same folder."""

    def __init__(
        self, index: SearchIndex, searcher: Any, load: Callable[[SearchIndex], Any] | None, every: float = CHECK_EVERY
    ):
        """
        Args:
            index: the opened index.
            searcher: its (checked) model.
            load: the model for a newer index (None: never switch).
            every: seconds between two looks at the folder.
        """
        self._pair: tuple[SearchIndex, Any] = (index, searcher)
        self._stamp = meta_stamp(index.directory)
        self._load, self.every = load, every
        self._checked = time.monotonic()
        self._reloading = threading.Lock()
        self._warned: tuple | None = None

    def current(self) -> tuple[SearchIndex, Any]:
        """``(index, model)`` to answer one request from (after switching, when the folder changed)."""
        due = self._load is not None and time.monotonic() - self._checked >= self.every
        if due and self._reloading.acquire(blocking=False):  # one switch at a time; others use the old pair
            try:
                self._refresh()
            finally:
                self._reloading.release()
        return self._pair

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        stamp = meta_stamp(self._pair[0].directory)
        if stamp is None or stamp == self._stamp:
            return
        old_index, old_model = self._pair
        try:
            index = open_index(old_index.directory)
            same = index.meta.model.digest == old_model.identity.digest
            model = old_model if same else self._load(index)  # type: ignore[misc]
        except (SearchError, OSError, ValueError) as exc:
            if stamp != self._warned:
                self._warned = stamp
                print(f"warning: still serving the previous index: {str(exc).splitlines()[0]}", file=sys.stderr)
            return
        self._pair, self._stamp = (index, model), stamp
        if not same:
            print(
                f"serving {index.directory} anew: {len(index)} images, model {index.meta.model.label}", file=sys.stderr
            )
