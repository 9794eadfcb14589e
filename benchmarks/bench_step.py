"""asv: one multi-task step as the shared and per-task shapes grow."""
import mtrl_fast
from mtrl_fast.bench import step_inputs


class Step:
    params = (["shared", "per-task"], [(256, 256, 256, 16), (1024, 256, 256, 64)])
    param_names = ["layout", "(n, d, m, T)"]

    def setup(self, layout, shape):
        self.X, self.Y, self.W, self.b, self.A = step_inputs(layout, *shape)
        mtrl_fast.loss_and_grad(self.X, self.Y, self.W, self.b, self.A)  # compile / load outside the timing

    def time_forward(self, layout, shape):
        mtrl_fast.forward(self.X, self.W, self.b, self.A)

    def time_loss_and_grad(self, layout, shape):
        mtrl_fast.loss_and_grad(self.X, self.Y, self.W, self.b, self.A)
