"""The reproduction's studies. Each owns its cells, its records' schema, its claims, tables and
figures (:class:`Study`); the orchestration (``experiments``) and the report run whichever studies a
grid names. A new study is a module here and one entry in :data:`STUDIES`."""

from ._common import Cell, Study
from .downstream import DOWNSTREAM
from .mechanism import MECHANISM
from .recovery import RECOVERY
from .width import WIDTH

#: Every study, by name, in the order the report shows them.
STUDIES = {study.name: study for study in (RECOVERY, DOWNSTREAM, MECHANISM, WIDTH)}

__all__ = ["STUDIES", "Cell", "Study"]
