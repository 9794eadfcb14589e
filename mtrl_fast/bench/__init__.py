"""The benchmark harness (``pip install "mtrl_fast[bench]"``).

``workload``: the shapes, their inputs, FLOP counts and the step's own products (the one source
the command, the asv suite, the pytest-benchmark comparisons and the CI checks share);
``timing``: the one timer; ``runner``: per-backend processes, agreement checks, alternating
rounds; ``output``: the table, CSV/JSON and plots; ``peers``: ours, the reference and the peers
(NumPy, PyTorch, ``torch.compile``, JAX), one class in one file each; ``cell``: a whole paper cell
in each; ``torch_step`` and ``jax_op``: the framework ops in a training loop.
"""
