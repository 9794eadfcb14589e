"""PyTorch's matmul as a GEMM provider (as ``mtrl_fast._mkl`` loads Intel MKL's)."""

import warnings

import numpy as np


def matmul(left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``left @ right`` by PyTorch's matmul on the arrays' own memory (no copies)."""
    import torch

    if left.flags.writeable and right.flags.writeable:
        operands = torch.from_numpy(left), torch.from_numpy(right)
    else:  # read-only inputs: PyTorch warns, and only reads them here (the block costs 3 us a product)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            operands = torch.from_numpy(left), torch.from_numpy(right)
    if out is None:
        return torch.matmul(*operands).numpy()
    torch.matmul(*operands, out=torch.from_numpy(out))
    return out
