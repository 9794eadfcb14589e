"""The paper's system: synthetic tasks, alternating pretraining, metrics, the reproduction grid
and its report (``pip install "mtrl_fast[paper]"``).

Built on the public kernel API alone. ``tasks`` draws multi-task data whose labels depend only on
``M^T x``; ``train`` pretrains heads-first with alternating steps; ``metrics`` measures subspace
recovery and probes features downstream; ``experiments`` runs the seeded, resumable grid;
``report`` writes results, figures and the claims with computed verdicts.
"""

try:
    import scipy  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mtrl_fast.paper needs scipy, which is not installed: pip install 'mtrl_fast[paper]'") from error
