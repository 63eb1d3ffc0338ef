"""One batch of a render as it is handed to the consumer: a dict of arrays that can be released.

On the GPU the arrays of a host batch are views into page-locked buffers that the renderer
reuses (:mod:`.gpu_streams`); :meth:`Batch.release` tells it that the consumer is done with
them. Everywhere else ``release`` does nothing, so one consumer loop serves every device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Batch"]


class Batch(dict):
    """A dict of a batch's arrays by name, with :meth:`release` (also on leaving ``with``).

    ``release()`` is a promise: nothing reads the batch's arrays (or views of them) any
    more, so the renderer may write the next batches into their memory at once. Without it
    the memory comes back when the last of those arrays is garbage collected. Calling it
    twice, or on a batch whose memory the renderer does not reuse, does nothing.
    """

    __slots__ = ("_release",)

    def __init__(self, arrays: Mapping[str, Any] = (), release: Callable[[], None] | None = None,
                 ) -> None:
        super().__init__(arrays)
        self._release = release

    def release(self) -> None:
        """Hand the batch's buffers back to the renderer (see the class)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def detach(self) -> dict[str, Any]:
        """A plain dict of the arrays, copied where they are views of the renderer's
        buffers (so they belong to the caller for good); the batch is released."""
        owned = {k: v.copy() if self._release is not None and isinstance(v, np.ndarray) else v
                 for k, v in self.items()}
        self.release()
        return owned

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # pickled as the plain dict of its arrays
