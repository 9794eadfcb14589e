"""PyTorch (CPU): autograd over the batched model (``torch``) or over mtrl_fast.torch's loss op (``torch+ours``)."""

from mtrl_fast.gradients import Gradients

from . import Backend, PreparedStep, importable


def _objective(name, loss, Xt, Yt):
    """The mean loss as a function of ``(W, b, A)``: the batched model under autograd, or
    mtrl_fast.torch's loss op (``torch+ours``)."""
    import torch

    from mtrl_fast.torch import plain_losses

    def objective(Wt, bt, At):
        if name == "torch+ours":
            import mtrl_fast.torch as ours

            return ours.loss(Xt, Yt, Wt, bt, At, loss, check_finite=False)
        Z = Xt @ Wt.T
        if bt is not None:
            Z = Z + bt
        H = torch.relu(Z)
        F = At @ H.T if Xt.ndim == 2 else torch.bmm(H, At.unsqueeze(-1)).squeeze(-1)
        return plain_losses(loss, F, Yt).mean()

    return objective


def backend(name):
    def prepare(X, Y, W, b, A, loss):
        import torch

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        params = [
            torch.tensor(W, requires_grad=True),
            None if b is None else torch.tensor(b, requires_grad=True),
            torch.tensor(A, requires_grad=True),
        ]
        Wt, bt, At = params
        last = {}

        objective = _objective(name, loss, Xt, Yt)

        def run():
            for p in params:
                if p is not None:
                    p.grad = None
            L = objective(Wt, bt, At)
            L.backward()
            last["out"] = (L, Wt.grad, None if bt is None else bt.grad, At.grad)
            return last["out"]

        def result():
            L, gW, gb, gA = last["out"] if "out" in last else run()
            return float(L.detach()), Gradients(W=gW.numpy(), b=None if gb is None else gb.numpy(), A=gA.numpy())

        return PreparedStep(run, result)

    def prepare_round(X, Y, W, b, A, loss):
        import torch

        from ..workload import ROUND

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        start = [None if a is None else torch.from_numpy(a) for a in (W, b, A)]
        T = A.shape[0]
        last = {}

        objective = _objective(name, loss, Xt, Yt)

        def run():
            # As a PyTorch user writes it: the frozen parameters do not require grad, so autograd
            # (and mtrl_fast.torch's op) computes only the gradients the step needs.
            Wt, bt, At = (None if a is None else a.clone() for a in start)
            first_layer = [p for p in (Wt, bt) if p is not None]
            At.requires_grad_(True)
            for _ in range(ROUND["head_steps"]):
                (gA,) = torch.autograd.grad(objective(Wt, bt, At), [At])
                with torch.no_grad():
                    At -= ROUND["head_lr"] * T * gA
            At.requires_grad_(False)
            for p in first_layer:
                p.requires_grad_(True)
            value = objective(Wt, bt, At)
            grads = torch.autograd.grad(value, first_layer)
            with torch.no_grad():
                Wt.mul_(1 - ROUND["lr"] * ROUND["weight_decay"])
                for p, g in zip(first_layer, grads):
                    p -= ROUND["lr"] * g
            last["out"] = (value.detach(), Wt.detach(), None if bt is None else bt.detach(), At)
            return last["out"]

        def result():
            value, Wt, bt, At = last["out"] if "out" in last else run()
            return float(value), Gradients(W=Wt.numpy(), b=None if bt is None else bt.numpy(), A=At.numpy())

        return PreparedStep(run, result)

    def set_threads(k):
        import torch

        torch.set_num_threads(k)

    def version():
        import torch

        return torch.__version__

    return Backend(name, lambda: importable("torch"), prepare, set_threads, version, prepare_round)
