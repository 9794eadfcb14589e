"""The settings a step runs under (GEMM provider, thread count), carried to another thread.

A framework may run an op on a thread of its own: XLA runs a custom call on its pool's threads when
a computation holds other work. The GEMM setting and Numba's thread count are per Python thread,
and a thread Python did not start begins each call with a fresh Python thread state, so neither
the user's block (``mtrl_fast.gemm``, ``mtrl_fast.num_threads``) nor anything set there before
would be in force. :class:`Settings` captures them where the op is traced and applies them where
it runs. The BLAS thread limit is process-wide and needs no carrying.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba

from . import gemms


@dataclass(frozen=True)
class Settings:
    """A GEMM choice (``None`` where nobody chose: the op's own default then) and a thread count."""

    gemm: str | None
    threads: int

    @classmethod
    def here(cls) -> "Settings":
        """The settings in force on the calling thread."""
        return cls(gemms.chosen(), numba.get_num_threads())

    def suffix(self) -> str:
        """A name part that tells these settings apart (for a target registered once per setting)."""
        return f"__{self.gemm or 'default'}_{self.threads}t"

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the block under these settings on the calling thread, then restore its own."""
        previous = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            if self.gemm is None:
                yield
            else:
                with gemms.gemm(self.gemm):
                    yield
        finally:
            numba.set_num_threads(previous)
