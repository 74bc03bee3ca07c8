import pytest

from fastgan import ConfigError, TrainConfig


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
    a = TrainConfig().resolved()
    assert a.incompatible_with(TrainConfig(r1_gamma=1.0).resolved()) == ["r1_gamma"]
    assert TrainConfig(r1_gamma=1.0).incompatible_with(TrainConfig(r1_gamma=5.0)) == []
