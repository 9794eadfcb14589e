"""The reproduction's studies. Each owns its cells, its records' schema, its claims, tables and
figures, and the grid parameters it adds (:class:`Study`, :class:`Parameter`); the orchestration
(``experiments``) and the report run whichever studies a grid names, and the grid's fields and the
command's options are generated from the parameters. A new study, with parameters or without, is a
module here and one entry in :data:`STUDIES` (registered before ``mtrl_fast.paper.grid`` is
imported, which derives the grid's fields from the registry)."""

from ._common import Cell, Parameter, Study, parameters_of
from .ablation import ABLATION
from .downstream import DOWNSTREAM
from .mechanism import MECHANISM
from .phase import PHASE
from .recovery import RECOVERY
from .width import WIDTH

#: Every study, by name, in the order the report shows them.
STUDIES = {study.name: study for study in (RECOVERY, DOWNSTREAM, MECHANISM, WIDTH, ABLATION, PHASE)}

#: The studies a run computes unless told otherwise.
DEFAULT_STUDIES = ("recovery", "downstream", "mechanism")

__all__ = ["DEFAULT_STUDIES", "STUDIES", "Cell", "Parameter", "Study", "parameters_of"]
