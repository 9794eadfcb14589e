"""The paper's system: synthetic tasks, alternating pretraining, metrics, the reproduction grid
and its report (``pip install "mtrl_fast[paper]"``).

Built on the kernels' public API (the runner adds the package's progress bar and machine facts). ``tasks`` draws multi-task data whose labels depend only on
``M^T x``; ``train`` pretrains heads-first with alternating steps; ``metrics`` measures subspace
recovery and probes features downstream; ``experiments`` runs the seeded, resumable grid;
``report`` writes results, figures and the claims with computed verdicts; ``alignment`` measures
the paper's mechanism, the features' alignment with cross-task label agreement (its functions are
here: apply them to a layer of your own).
"""

try:
    import scipy  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mtrl_fast.paper needs scipy, which is not installed: pip install 'mtrl_fast[paper]'") from error

from .alignment import feature_kernel, kernel_alignment, kernel_spearman, label_agreement_kernel  # noqa: E402

__all__ = ["feature_kernel", "kernel_alignment", "kernel_spearman", "label_agreement_kernel"]
