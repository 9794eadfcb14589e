"""PyTorch (CPU): autograd over the batched model as a user writes it (``torch``), or the same code
with mtrl_fast.torch's loss op in place of the model and its loss (``torch+ours``)."""

from mtrl_fast.gradients import Gradients

from . import Peer, PreparedStep


class TorchCode(Peer):
    """The step, the round and the training step as PyTorch code around :meth:`objective`: by
    default ``relu(X @ W.T + b) @ A.T`` and the loss's formula under PyTorch's autograd."""

    requires = "torch"

    def objective(self, X, Y, loss):
        """The mean loss as a function of ``(W, b, A)`` on tensors ``X`` and ``Y``."""
        from mtrl_fast.torch import plain_forward, plain_losses

        return lambda W, b, A: plain_losses(loss, plain_forward(X, W, b, A), Y).mean()

    def set_threads(self, k):
        import torch

        torch.set_num_threads(k)

    def prepare(self, X, Y, W, b, A, loss):
        import torch

        objective = self.objective(torch.from_numpy(X), torch.from_numpy(Y), loss)
        params = [None if a is None else torch.tensor(a, requires_grad=True) for a in (W, b, A)]
        last = {}

        def run():
            for p in params:
                if p is not None:
                    p.grad = None
            value = objective(*params)
            value.backward()
            last["out"] = (value, *(None if p is None else p.grad for p in params))
            return last["out"]

        def result():
            value, gW, gb, gA = last["out"] if "out" in last else run()
            return float(value.detach()), Gradients(W=gW.numpy(), b=None if gb is None else gb.numpy(), A=gA.numpy())

        return PreparedStep(run, result)

    def prepare_round(self, X, Y, W, b, A, loss):
        import torch

        from ..workload import ROUND

        objective = self.objective(torch.from_numpy(X), torch.from_numpy(Y), loss)
        start = [None if a is None else torch.from_numpy(a) for a in (W, b, A)]
        T = A.shape[0]
        last = {}

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

    def training_objective(self, X, Y, loss):
        """The objective of :meth:`training_step`: as a training loop calls it."""
        return self.objective(X, Y, loss)

    def training_step(self, X, Y, params, loss):
        """``torch.optim.SGD`` on ``params`` (leaf tensors ``[W, b, A]``) with this objective."""
        import torch

        objective = self.training_objective(X, Y, loss)
        optimizer = torch.optim.SGD([p for p in params if p is not None], lr=0.01)

        def step():
            optimizer.zero_grad()
            objective(*params).backward()
            optimizer.step()

        return step


class Torch(TorchCode):
    """Plain PyTorch, and its whole paper cell."""

    name = "torch"

    def cell(self, spec, M, V, W0, seed, sampler="full"):
        """A paper cell as a PyTorch user writes it: ``torch.randn`` inputs, the heads by
        ``autograd.grad``, then the first layer on the task-averaged loss; tasks in chunks."""
        import torch

        from mtrl_fast.torch import plain_losses

        from ..cell import chunks

        config = spec.config()
        torch.manual_seed(seed)
        Mt, Vt = torch.from_numpy(M).float(), torch.from_numpy(V).float()
        W = torch.from_numpy(W0).float()
        A = torch.zeros(spec.T, spec.width)

        def data(c, v):
            X = torch.randn(c, spec.n, spec.d)
            scores = torch.einsum("cnr,cr->cn", X @ Mt, v)
            return X, torch.where(scores >= 0, 1.0, -1.0)

        def outputs(X, W, a):
            return torch.einsum("cnm,cm->cn", torch.relu(X @ W.T), a)

        for _ in range(config.rounds):
            gW = torch.zeros_like(W)
            for first, c in chunks(spec.T):
                v = Vt[first : first + c]
                X, Y = data(c, v)
                a = A[first : first + c].clone()
                for _ in range(config.head_steps):  # each task's head on its own mean loss
                    a.requires_grad_(True)
                    (g,) = torch.autograd.grad(plain_losses(config.loss, outputs(X, W, a), Y).mean(dim=1).sum(), a)
                    a = (a - config.head_lr * g).detach()
                A[first : first + c] = a
                X, Y = data(c, v)
                Wr = W.clone().requires_grad_(True)
                share = plain_losses(config.loss, outputs(X, Wr, a), Y).sum() / (spec.T * spec.n)
                (g,) = torch.autograd.grad(share, Wr)
                gW += g
            W = (1 - config.lr * config.weight_decay) * W - config.lr * gW
        return W.double().numpy()


class TorchOurs(TorchCode):
    """The same PyTorch code with ``mtrl_fast.torch.loss`` as the objective (values unchecked in
    the step and the round; checked, as users call it, in the training step)."""

    name = "torch+ours"
    role = "op"

    def objective(self, X, Y, loss, check_finite=False):
        import mtrl_fast.torch as ours

        return lambda W, b, A: ours.loss(X, Y, W, b, A, loss, check_finite=check_finite)

    def training_objective(self, X, Y, loss):
        return self.objective(X, Y, loss, check_finite=True)
