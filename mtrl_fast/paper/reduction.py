"""The reduced sampler's algebra: what of a Gaussian input a network and the labels see.

Labels depend on ``x`` through ``M^T x`` and a first layer through ``W x``. For ``x ~ N(0, I_d)`` and
an orthonormal basis ``Q (d, k)`` of a space holding ``span(M)`` and the rows of ``W``, the
coordinates ``c = Q^T x ~ N(0, I_k)`` carry both exactly (``M^T x = (Q^T M)^T c``, ``W x = (W Q) c``),
and the rest of ``x``, ``x_perp = (I - Q Q^T) x``, is independent of ``c``. The first-layer gradient
``D^T X`` is the one place ``x_perp`` enters: given ``D``, ``D^T X_perp`` has the law of
``L G (I - Q Q^T)`` with ``L L^T = D^T D`` and ``G`` standard normal (:func:`outside_term`).
"""

import numpy as np

from .sampling import normals


def sampled_basis(M, *layers):
    """An orthonormal basis ``Q (d, k)`` of a space holding ``span(M)`` and every layer's rows.

    Householder QR of ``[M, W_1^T, ...]``: ``Q`` is orthonormal to rounding even when the columns
    are dependent (the oracle layer lies inside ``span(M)``), and its span holds theirs exactly;
    its first ``r`` columns are ``M``'s, up to sign. ``k = min(d, r + sum of widths)``.
    """
    columns = [np.asarray(M, dtype=np.float64)] + [np.asarray(W, dtype=np.float64).T for W in layers]
    Q, _ = np.linalg.qr(np.concatenate(columns, axis=1))
    return Q


def outside_term(gram, Q, key):
    """A draw of ``D^T X_perp`` given ``gram = D^T D``: ``L G (I - Q Q^T)``, ``L L^T = gram``.

    ``X_perp`` holds the inputs' components outside ``span(Q)`` (independent of everything drawn
    in ``Q``'s coordinates). ``L = V sqrt(Lambda)`` from the eigendecomposition of ``gram`` (zero
    eigenvalues, from dead neurons, are fine); ``G (m, d)`` is standard normal under ``key``.
    Zero when ``Q`` spans all of ``R^d``.
    """
    d, k = Q.shape
    m = gram.shape[0]
    if k >= d:
        return np.zeros((m, d))
    G = normals(key, m, d)
    G -= (G @ Q) @ Q.T
    eigenvalues, V = np.linalg.eigh(gram)
    return (V * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ G


def joint_coordinates(M, *layers):
    """``M`` and the layers in coordinates of their own: ``(M_c (k, r), [W_c (m_j, k), ...])`` with
    ``(M^T x, W_1 x, ...)`` for ``x ~ N(0, I_d)`` and ``(M_c^T c, W_1c c, ...)`` for ``c ~ N(0, I_k)``
    the same Gaussian vector in law.

    From the Gram matrix of the rows ``B = [M^T; W_1; ...]``: ``B B^T = V Lambda V^T`` gives the
    coordinates ``V sqrt(Lambda)``, restricted to the eigenvalues above rounding (``k`` is the rank
    of ``B``). Never forms a ``(d, k)`` matrix: at ``d = 10^5`` and four layers of 256 it holds one
    ``(1029, 1029)`` matrix, where a basis would take 0.8 GB. ``M_c`` has orthonormal columns, and
    each ``W_c`` row has its ``W`` row's norm.
    """
    rows = [np.asarray(M, dtype=np.float64).T] + [np.asarray(W) for W in layers]
    sizes = [len(block) for block in rows]
    gram = np.zeros((sum(sizes), sum(sizes)))
    starts = np.cumsum([0] + sizes)
    for i, left in enumerate(rows):
        left = left.astype(np.float64, copy=False)
        for j in range(i + 1):
            block = left @ rows[j].astype(np.float64, copy=False).T  # one layer pair at a time in float64
            gram[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] = block
            gram[starts[j] : starts[j + 1], starts[i] : starts[i + 1]] = block.T
    eigenvalues, V = np.linalg.eigh(gram)
    kept = eigenvalues > eigenvalues[-1] * gram.shape[0] * np.finfo(np.float64).eps
    coordinates = V[:, kept] * np.sqrt(eigenvalues[kept])
    blocks = [coordinates[starts[i] : starts[i + 1]] for i in range(len(rows))]
    return blocks[0].T, blocks[1:]
