import dataclasses

import pytest

from fastgan import ConfigError, TrainConfig
from fastgan.config import with_legacy_values


@pytest.mark.parametrize("kw, needle", [
    (dict(steps=-1), "steps"),
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(loss="wasserstein2"), "unknown loss"),
    (dict(resolution=48), "resolution 48 is not supported"),
    (dict(augment="color,blur"), "unknown augmentation 'blur'"),
    (dict(batch_size=10, pack=4), "multiple of pack"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(lr_g=0.0), "lr_g"),
    (dict(mode="turbo"), "unknown mode"),
    (dict(amp="fp8"), "unknown amp"),
    (dict(device="tpu"), "unknown device"),
    (dict(augment_p=1.5), "augment_p"),
    (dict(beta1=1.0), "beta1"),
    (dict(beta2=-0.1), "beta2"),
    (dict(lr_decay=1.5), "lr_decay must be a fraction"),
    (dict(lr_decay=float("nan")), "lr_decay must be a fraction"),
    (dict(lr_decay_to=2.0), "lr_decay_to"),
])
def test_invalid_values_are_named(kw, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        TrainConfig(**kw).validate()
    assert "\n" not in str(e.value)


def test_defaults_validate_and_resolve():
    cfg = TrainConfig().validate()
    r = cfg.resolved()
    assert (r.resolution, r.z_dim) == (16, 100)
    p = TrainConfig(data="grid25").resolved()
    assert p.z_dim == 2 and p.g_width and p.d_width


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(data="ring8", steps=7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"stepz": 3})


def test_incompatibility_lists_fields():
    a = TrainConfig(z_dim=64).resolved()
    b = TrainConfig(z_dim=100, lr_g=1e-3).resolved()
    assert a.incompatible_with(b) == ["z_dim"]
    assert a.arch_hash() != b.arch_hash()


def test_turning_a_penalty_on_changes_the_discriminator():
    a = TrainConfig(data="stacked_digits").resolved()
    assert a.incompatible_with(TrainConfig(data="stacked_digits", r1_gamma=1.0).resolved()) == ["r1_gamma"]
    assert TrainConfig(r1_gamma=1.0).incompatible_with(TrainConfig(r1_gamma=5.0)) == []


def test_adam_and_schedule_defaults_per_data_kind():
    img, pts = TrainConfig(data="imgs").resolved(), TrainConfig(data="ring8").resolved()
    assert (img.beta1, img.beta2, img.lr_decay) == (0.5, 0.999, 0.0)
    assert (pts.beta1, pts.beta2, pts.lr_decay) == (0.0, 0.99, 0.5)
    assert TrainConfig(data="ring8", beta1=0.5, lr_decay=0.0).resolved().beta1 == 0.5


def test_lr_factor_is_flat_then_linear_down_to_the_floor():
    cfg = TrainConfig(data="grid25", steps=100, lr_decay=0.5, lr_decay_to=0.1).resolved()
    f = [cfg.lr_factor(s) for s in range(100)]
    assert f[:51] == [1.0] * 51                       # the first half (steps 0..50) is flat
    assert f[99] == pytest.approx(0.1) and cfg.lr_factor(500) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f, f[1:]))
    steps = [f[i] - f[i + 1] for i in range(50, 99)]  # equal decrements: linear
    assert max(steps) == pytest.approx(min(steps))
    assert cfg.lr_factor(99, steps=200) == 1.0        # a longer run decays later
    assert TrainConfig(steps=100, lr_decay=0.0).lr_factor(99) == 1.0
    assert TrainConfig(data="grid25", steps=10, lr_decay=1.0, lr_decay_to=0.0).lr_factor(9) == 0.0


def test_every_field_is_documented_from_its_own_help_metadata():
    import argparse
    import dataclasses
    import pydoc

    from fastgan.cli import build_parser

    text = " ".join(pydoc.render_doc(TrainConfig, renderer=pydoc.plaintext).replace("|", " ").split())
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    flags = {a.dest: a.help for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        h = f.metadata.get("help", "")
        assert len(h) > 10, f.name
        assert f"{f.name}: {' '.join(h.split())}" in text, f"help(TrainConfig) lacks {f.name}"
        assert flags[f.name].startswith(h.replace("%", "%%")), f"--{f.name} lacks its help"


def test_a_field_without_help_is_refused_when_documenting():
    import dataclasses

    from fastgan.config import _document_fields

    @dataclasses.dataclass
    class Partial:
        """Doc."""
        a: int = dataclasses.field(default=0, metadata={"help": "documented."})
        b: int = 1

    with pytest.raises(TypeError, match="Partial.b has no help"):
        _document_fields(Partial)


def test_a_saved_digits_config_without_digits_upscale_keeps_the_plain_bicubic():
    saved = TrainConfig(data="digits").resolved().to_dict()
    assert TrainConfig.from_dict(saved).digits_upscale == "block"
    del saved["digits_upscale"]                      # written before the field existed
    assert TrainConfig.from_dict(saved).digits_upscale == "bicubic"
    assert TrainConfig.from_dict({"data": "grid25"}).digits_upscale is None
    with pytest.raises(ConfigError, match="unknown digits_upscale 'nearest'; choose one of block, bicubic"):
        TrainConfig(digits_upscale="nearest").validate()


def test_digits_upscale_is_part_of_the_architecture_and_data_fields():
    block, plain = TrainConfig().resolved(), TrainConfig(digits_upscale="bicubic").resolved()
    assert block.incompatible_with(plain) == ["digits_upscale"]          # a resume cannot switch the images
    assert block.arch_hash() != plain.arch_hash()
    assert with_legacy_values({"data": ["digits"]}) == {"data": ["digits"]}   # junk data: nothing added
    assert with_legacy_values({"data": "digits", "digits_upscale": "block"})["digits_upscale"] == "block"
    assert "block" in {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}["digits_upscale"]


def test_digits_have_their_own_defaults_and_other_images_keep_dcgans():
    digits = TrainConfig(data="digits").resolved()
    got = {k: getattr(digits, k) for k in ("steps", "lr_g", "lr_d", "beta1", "beta2", "r1_gamma", "r1_every",
                                           "batch_size", "ema_decay", "lr_decay", "digits_upscale")}
    assert got == dict(steps=5000, lr_g=2e-3, lr_d=2e-3, beta1=0.0, beta2=0.99, r1_gamma=1.0, r1_every=16,
                       batch_size=64, ema_decay=0.999, lr_decay=0.0, digits_upscale="block")
    for data in ("stacked_digits", "some/folder"):
        c = TrainConfig(data=data).resolved()
        assert (c.steps, c.lr_g, c.beta1, c.beta2, c.r1_gamma, c.digits_upscale) == (2000, 2e-4, 0.5, 0.999, 0.0, None)
    mine = TrainConfig(data="digits", steps=7, lr_g=1e-4, beta1=0.5, r1_gamma=0.0).resolved()   # given values win
    assert (mine.steps, mine.lr_g, mine.lr_d, mine.beta1, mine.beta2, mine.r1_gamma) == (7, 1e-4, 1e-4, 0.5, 0.99, 0.0)
    # a run saved with the defaults of its day keeps them (saved configs are resolved)
    before = dict(TrainConfig(data="digits", steps=2000, lr_g=2e-4, beta1=0.5, beta2=0.999, r1_gamma=0.0)
                  .resolved().to_dict())
    del before["digits_upscale"]
    again = TrainConfig.from_dict(before).resolved()
    assert (again.steps, again.lr_g, again.beta1, again.r1_gamma, again.digits_upscale) == (
        2000, 2e-4, 0.5, 0.0, "bicubic")
