"""The metadata a fastgan ONNX file carries, so a consumer needs nothing else.

Everything lives in the model's ``metadata_props`` (string keys and values,
JSON where a value is structured) under the ``fastgan.`` prefix:

=========================  ===================================================
key                        value
=========================  ===================================================
fastgan.format             ``fastgan-generator-1`` (marks a fastgan file)
fastgan.version            fastgan version that wrote the file
fastgan.generator_class    e.g. ``DCGANGenerator``
fastgan.arch_config        JSON of the constructor kwargs (``arch_config()``)
fastgan.z_dim              latent size
fastgan.latent             ``normal``: latents are drawn from N(0, I)
fastgan.out_shape          JSON list, ``[C, H, W]`` or ``[2]``
fastgan.value_range        JSON ``[lo, hi]`` of the output, or ``null`` (points)
fastgan.num_classes        number of classes (0 = unconditional)
fastgan.class_names        JSON list of the class names (index = label), ``[]`` when unconditional
fastgan.vector_dim         size of the ``vectors`` input (0 = not vector-conditioned)
fastgan.precision          ``fp32`` or ``fp16`` (weights and arithmetic)
fastgan.io                 JSON ``{"inputs": [...], "output": ...}`` tensor names
fastgan.config_hash        ``TrainConfig.config_hash()`` of the run, or ``""``
fastgan.train_config       JSON of the run's config (without ``out``), or ``""``
=========================  ===================================================

User metadata passed to ``export_onnx(metadata=...)`` is stored under its own
keys, which must not start with ``fastgan.``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from fastgan.errors import CheckpointError, ConfigError

FORMAT = "fastgan-generator-1"
PREFIX = "fastgan."


@dataclass(frozen=True)
class GeneratorInfo:
    """What a fastgan generator file says about itself (parsed metadata).

    Args:
        generator_class: class name of the exported generator.
        arch_config: its constructor kwargs.
        z_dim: latent size.
        out_shape: shape of one sample, ``(C, H, W)`` or ``(2,)``.
        value_range: ``(lo, hi)`` of the outputs, or ``None`` for points.
        num_classes: 0 for an unconditional generator.
        class_names: name of each class (index = label), empty when unconditional.
        vector_dim: size of the conditioning vectors (input ``vectors``), 0 when there is none.
        precision: ``"fp32"`` or ``"fp16"``.
        input_names: graph input names (``["z"]`` or ``["z", "labels"]``).
        output_name: graph output name.
        version: fastgan version that wrote the file.
        config_hash: the training config hash, ``""`` when unknown.
        train_config: the training config as a dict, ``None`` when unknown.
        extra: user metadata (keys without the ``fastgan.`` prefix).
    """

    generator_class: str
    arch_config: dict
    z_dim: int
    out_shape: tuple
    value_range: Optional[tuple]
    num_classes: int
    precision: str
    input_names: list
    output_name: str
    version: str
    config_hash: str = ""
    train_config: Optional[dict] = None
    extra: dict = field(default_factory=dict)
    class_names: list = field(default_factory=list)
    vector_dim: int = 0

    @property
    def is_image(self) -> bool:
        """True for image generators (outputs shaped (C, H, W))."""
        return len(self.out_shape) == 3

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return {
            "generator_class": self.generator_class, "arch_config": dict(self.arch_config),
            "z_dim": self.z_dim, "out_shape": list(self.out_shape),
            "value_range": None if self.value_range is None else list(self.value_range),
            "num_classes": self.num_classes, "class_names": list(self.class_names),
            "vector_dim": self.vector_dim, "precision": self.precision,
            "input_names": list(self.input_names), "output_name": self.output_name,
            "version": self.version, "config_hash": self.config_hash,
            "train_config": self.train_config, "extra": dict(self.extra),
        }


def build_metadata(info: GeneratorInfo) -> dict[str, str]:
    """Encode a :class:`GeneratorInfo` as ONNX ``metadata_props`` strings.

    Args:
        info: the description of the exported generator.
    """
    for k in info.extra:
        if not isinstance(k, str) or not k or k.startswith(PREFIX):
            raise ConfigError(f"metadata key {k!r} is reserved or invalid (keys must be non-empty "
                              f"strings not starting with {PREFIX!r})")
    props = {str(k): str(v) for k, v in info.extra.items()}
    props.update({
        PREFIX + "format": FORMAT,
        PREFIX + "version": info.version,
        PREFIX + "generator_class": info.generator_class,
        PREFIX + "arch_config": json.dumps(info.arch_config, sort_keys=True),
        PREFIX + "z_dim": str(int(info.z_dim)),
        PREFIX + "latent": "normal",
        PREFIX + "out_shape": json.dumps([int(s) for s in info.out_shape]),
        PREFIX + "value_range": json.dumps(None if info.value_range is None
                                           else [float(v) for v in info.value_range]),
        PREFIX + "num_classes": str(int(info.num_classes)),
        PREFIX + "class_names": json.dumps(list(info.class_names)),
        PREFIX + "vector_dim": str(int(info.vector_dim)),
        PREFIX + "precision": info.precision,
        PREFIX + "io": json.dumps({"inputs": list(info.input_names), "output": info.output_name}),
        PREFIX + "config_hash": info.config_hash or "",
        PREFIX + "train_config": "" if info.train_config is None
        else json.dumps(info.train_config, sort_keys=True),
    })
    return props


def parse_metadata(props: Mapping[str, str], source: str) -> GeneratorInfo:
    """Decode ``metadata_props`` written by :func:`build_metadata`.

    Args:
        props: the model's metadata (e.g. ONNX Runtime's ``custom_metadata_map``).
        source: file name used in error messages.

    Raises:
        CheckpointError: the file has no fastgan metadata or it is malformed.
    """
    fmt = props.get(PREFIX + "format")
    if fmt is None:
        raise CheckpointError(f"'{source}' is an ONNX model but not a fastgan generator "
                              "(no fastgan metadata; export it with fastgan.export.export_onnx)")
    if fmt != FORMAT:
        raise CheckpointError(f"'{source}' has fastgan metadata format {fmt!r}; this fastgan reads {FORMAT!r}")
    try:
        value_range = json.loads(props[PREFIX + "value_range"])
        io = json.loads(props[PREFIX + "io"])
        train_config = props.get(PREFIX + "train_config", "")
        num_classes = int(props[PREFIX + "num_classes"])
        return GeneratorInfo(
            generator_class=props[PREFIX + "generator_class"],
            arch_config=json.loads(props[PREFIX + "arch_config"]),
            z_dim=int(props[PREFIX + "z_dim"]),
            out_shape=tuple(int(s) for s in json.loads(props[PREFIX + "out_shape"])),
            value_range=None if value_range is None else (float(value_range[0]), float(value_range[1])),
            num_classes=num_classes,
            class_names=_class_names(props, num_classes),
            vector_dim=int(props.get(PREFIX + "vector_dim", "0")),
            precision=props[PREFIX + "precision"],
            input_names=list(io["inputs"]),
            output_name=str(io["output"]),
            version=props[PREFIX + "version"],
            config_hash=props.get(PREFIX + "config_hash", ""),
            train_config=json.loads(train_config) if train_config else None,
            extra={k: v for k, v in props.items() if not k.startswith(PREFIX)},
        )
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"'{source}' has malformed fastgan metadata ({type(e).__name__}: {e})") from None


def _class_names(props: Mapping[str, str], num_classes: int) -> list:
    """The file's class names; zero-padded indices for files written before names were stored."""
    from fastgan.sampling import default_class_names

    names = json.loads(props.get(PREFIX + "class_names", "null"))
    if names is None:
        return default_class_names(num_classes) if num_classes else []
    if not isinstance(names, list) or len(names) != num_classes:
        raise ValueError(f"class_names holds {len(names) if isinstance(names, list) else names!r} names "
                         f"for {num_classes} classes")
    return [str(n) for n in names]
