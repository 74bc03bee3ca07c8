"""The loop runs any model family: a task that is not a GAN trains, logs, checkpoints and resumes exactly."""

import json

import torch
from torch import nn

from fastgan import Trainer, TrainConfig
from fastgan.images import plot_points
from fastgan.stats import RunningStats
from fastgan.tasks import Step, Task
from helpers import state_equal


class LinearRegression(Task):
    """A family of its own: fit y = x @ W_true with one linear layer (draws its batches on the device)."""

    progress_keys = {"mse": "mse"}
    network_labels = {"net": "regressor"}

    def __init__(self, cfg, engine, *, data=None):
        self.cfg, self.engine, self.device = cfg.resolved(points=True), engine, engine.device
        torch.manual_seed(self.cfg.seed)
        self.w_true = torch.randn(2, 2, device=self.device)
        self.net = nn.Linear(2, 2).to(self.device)
        self.opt = engine.make_optimizer(self.net.parameters(), lr=1e-2, betas=(0.9, 0.99),
                                         scheduled=bool(self.cfg.lr_decay))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.cfg.seed)
        self.stats = RunningStats({"train": ("mse",)}, self.device)
        self.iterations = 0   # Python-side state: counted by after_iteration, never inside the step

    def steps(self):
        return [Step("train", self.train_step, (self.gen,))]

    def train_step(self):
        x = torch.randn(self.cfg.batch_size, 2, device=self.device, generator=self.gen)
        loss = (self.net(x) - x @ self.w_true).square().mean()
        self.engine.update(loss, self.opt, None)
        self.stats.add("train", loss)

    def train(self):
        self.net.train()

    def after_iteration(self):
        self.iterations += 1

    def networks(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def state_dict(self):
        return {"gen_state": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen_state"])

    def save_samples(self, path):
        with torch.no_grad():
            plot_points(self.net(torch.eye(2, device=self.device)).cpu(), path)

    def evaluate(self):
        return {"weight_error": float((self.net.weight.detach().t() - self.w_true).abs().max())}


def _cfg(out, **kw):
    return TrainConfig(data="grid25", out=str(out), steps=8, batch_size=16, log_every=2, ckpt_every=4,
                       sample_every=4, eval_every=4, progress=False, device="cpu", **kw)


def test_a_new_family_trains_logs_and_resumes_exactly(tmp_path):
    full = Trainer(_cfg(tmp_path / "full"), task=LinearRegression).fit()
    assert full.step == 8 and full.iterations == 8          # the task's attributes read through the Trainer
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if "mse" in r]
    assert [r["step"] for r in logged] == [2, 4, 6, 8] and logged[-1]["mse"] < logged[0]["mse"]
    assert [r["step"] for r in lines if "eval" in r] == [4, 8]
    assert (tmp_path / "full" / "samples" / "step_00000004.png").exists()

    Trainer(_cfg(tmp_path / "part"), task=LinearRegression).fit(5)   # checkpoints at 4 and 5
    resumed = Trainer(_cfg(tmp_path / "part"), task=LinearRegression)
    assert resumed.step == 5
    resumed.fit()
    assert state_equal(full.net, resumed.net)
    assert torch.equal(full.opt.state_dict()["state"][0]["exp_avg"], resumed.opt.state_dict()["state"][0]["exp_avg"])


def test_the_schedule_scales_every_optimiser_of_a_task(tmp_path):
    tr = Trainer(_cfg(tmp_path / "r", lr_decay=1.0, lr_decay_to=0.5), task=LinearRegression)
    tr.run_steps(8)
    assert tr.opt.param_groups[0]["lr"] == 1e-2 * 0.5
