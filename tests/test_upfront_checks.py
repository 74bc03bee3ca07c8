"""Mistakes refused before training starts, each with one line: custom networks of the wrong shape,
config values of the wrong type, a state.pt of the wrong structure."""

import json

import pytest
import torch
from torch import nn

from fastgan import CheckpointError, ConfigError, TrainConfig, Trainer
from fastgan import checkpoint as ckpt_mod
from fastgan import checkpoint_store as store
from helpers import tiny_images, tiny_points


class ImageG(nn.Module):
    """A generator for 16-px images with a configurable output (the wrong one, in these tests)."""

    def __init__(self, z_dim=16, channels=1, size=16, z_attr=True):
        super().__init__()
        if z_attr:
            self.z_dim = z_dim
        self.shape = (channels, size, size)
        self.net = nn.Linear(z_dim, channels * size * size)

    def forward(self, z, labels=None):
        return torch.tanh(self.net(z)).view(len(z), *self.shape)


class ImageD(nn.Module):
    """A discriminator for 16-px grey images returning ``out(B)`` shaped logits."""

    def __init__(self, out=lambda b: (b,)):
        super().__init__()
        self.out = out
        self.net = nn.Linear(256, 1)

    def forward(self, x, labels=None):
        s = self.net(x.flatten(1))                     # (B, 1)
        shape = self.out(len(x))
        return s.sum() if shape == () else s.expand(len(x), int(torch.tensor(shape).prod()) // len(x)).reshape(shape)


@pytest.mark.parametrize("G, D, needle", [
    (ImageG(size=32), None, r"generator returned \(2, 1, 32, 32\) .*shape \(2, 1, 16, 16\)"),
    (ImageG(channels=3), None, r"generator returned \(2, 3, 16, 16\) .*shape \(2, 1, 16, 16\): check its output "
                               r"size and channels"),
    (ImageG(z_dim=8, z_attr=False), None, r"generator fails on latents of shape \(2, 16\) .*z_dim=16"),
    (None, ImageD(lambda b: (b, 2)), r"discriminator returned \(2, 2\) for 2 samples; .*one logit per sample: "
                                     r"shape \(2,\) or \(2, 1\)"),
    (None, ImageD(lambda b: (b, 1, 4, 4)), r"discriminator returned \(2, 1, 4, 4\)"),
    (None, ImageD(lambda b: ()), r"discriminator returned \(\) for 2 samples"),
])
def test_custom_networks_of_the_wrong_shape_are_refused_naming_them(tmp_path, G, D, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        Trainer(tiny_images(tmp_path / "run"), generator=G, discriminator=D)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_custom_networks_that_fit_train_exactly_as_without_the_check(tmp_path, monkeypatch):
    """Right shapes pass ((B,) or (B, 1) logits), and the probe changes nothing: not the networks'
    modes, not the random state, not the training that follows."""
    import fastgan.tasks.noise_to_image as task_mod

    def run(name):
        torch.manual_seed(3)
        G, D = ImageG(), ImageD(lambda b: (b, 1))
        tr = Trainer(tiny_images(tmp_path / name), generator=G, discriminator=D)
        assert G.training and D.training
        return tr, torch.get_rng_state()

    checked, rng_checked = run("checked")
    monkeypatch.setattr(task_mod, "check_networks", lambda *a, **k: None)
    unchecked, rng_unchecked = run("unchecked")
    assert torch.equal(rng_checked, rng_unchecked)
    checked.fit(2)
    unchecked.fit(2)
    for a, b in zip(checked.G.parameters(), unchecked.G.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(checked.D.parameters(), unchecked.D.parameters()):
        assert torch.equal(a, b)


def test_a_network_given_by_name_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"generator must be a torch.nn.Module, got str 'dcgan'; the built-in "
                                          r"networks come from the config"):
        Trainer(tiny_images(tmp_path / "run"), generator="dcgan")
    with pytest.raises(ConfigError, match=r"discriminator must be a torch.nn.Module, got int"):
        Trainer(tiny_images(tmp_path / "run"), discriminator=3)


@pytest.mark.parametrize("field, value, needle", [
    ("augment", 5, r"augment must be a string \(comma-separated names, e.g. 'flip,translation'\), got int 5"),
    ("augment", ["flip"], r"augment must be a string .*got list \['flip'\]"),
    ("device", 5, r"device must be a string, got int 5"),
    ("progress", "no", r"progress must be true or false, got str 'no'"),
    ("steps", "100", r"steps must be an integer or null, got str '100'"),
    ("lr_g", True, r"lr_g must be a number or null, got bool True"),
])
def test_config_values_of_the_wrong_type_from_python_and_from_json(tmp_path, field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        Trainer(tiny_points(tmp_path / "a", **{field: value}))
    from fastgan.cli import main
    run = tmp_path / "b"
    run.mkdir()
    cfg = tiny_points(run).to_dict()
    cfg[field] = value
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--out", str(run)]) == 2


def test_a_config_file_holding_a_list_is_one_line(tmp_path, capsys):
    from fastgan.cli import main
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "a config must be a JSON object of field: value pairs, got a list" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(["data", "digits"])


def _rewrite_state(ckpt, change):
    """Replace a checkpoint's state.pt by ``change(state)`` and keep its manifest valid."""
    import hashlib
    import io
    state = torch.load(ckpt / "state.pt", weights_only=True)
    buf = io.BytesIO()
    torch.save(change(state), buf)
    data = buf.getvalue()
    (ckpt / "state.pt").write_bytes(data)
    m = store.read_manifest(ckpt)
    m["files"]["state.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / store.MANIFEST_FILE).write_text(json.dumps(m))


@pytest.mark.parametrize("change", [
    lambda s: {**s, "opt_g": [1, 2, 3]},
    lambda s: {**s, "torch_rng": "not a tensor"},
    lambda s: {**s, "step": "four"},
    lambda s: {**s, "history": 5},
    lambda s: {k: v for k, v in s.items() if k != "gen_state"},
    lambda s: {**s, "stats": torch.zeros(3)},
])
def test_a_state_of_the_wrong_structure_is_one_line(tmp_path, change):
    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=4)).fit()
    _rewrite_state(ckpt_mod.latest_checkpoint(run), change)
    with pytest.raises(CheckpointError, match="holds an unusable training state") as e:
        Trainer(tiny_points(run, steps=4))
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this runs code (creates a file): what a hostile state.pt would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickled_code_in_a_state_file_is_refused_never_run(tmp_path, monkeypatch):
    import fastgan.train
    monkeypatch.setattr(fastgan.train, "plot_history", lambda *a, **k: None)   # no part of this test
    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=4)).fit()
    marker = tmp_path / "code-ran"
    ckpt = ckpt_mod.latest_checkpoint(run)
    _rewrite_state(ckpt, lambda s: {**s, "extra": _Payload(marker)})   # manifest valid: only the content is hostile
    with pytest.raises(CheckpointError, match=r"state.pt' is not a readable fastgan training state \(Unpickling"):
        Trainer(tiny_points(run, steps=4))
    assert not marker.exists()
    torch.load(ckpt / "state.pt", weights_only=False)   # the payload is real: an unrestricted load runs it
    assert marker.exists()
