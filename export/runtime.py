"""Run an exported fastgan generator with ONNX Runtime (no PyTorch model needed).

Layouts: ``run()`` and ``sample(output="float")`` return the raw generator
output, float32 ``(N, C, H, W)`` in ``value_range`` (as the PyTorch generator
does) or ``(N, 2)`` points. ``sample(output="uint8")`` returns images as uint8
``(N, H, W, C)``, the layout PIL, imageio and matplotlib expect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from fastgan.errors import CheckpointError, ConfigError, DataError

from .metadata import GeneratorInfo, parse_metadata

ProvidersArg = Union[str, Sequence[str]]


def resolve_providers(providers: ProvidersArg = "auto") -> list[str]:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or a list of provider names into ORT providers.

    Args:
        providers: ``"auto"`` (CUDA when this onnxruntime build has it, else CPU),
            ``"cpu"``, ``"cuda"``, or explicit names such as
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]``.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + \
                ["CPUExecutionProvider"]
        if key == "cpu":
            return ["CPUExecutionProvider"]
        if key == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise ConfigError("providers='cuda' but this onnxruntime build has no CUDA provider "
                                  f"(available: {', '.join(available)}); install onnxruntime-gpu or use 'cpu'")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [providers]
    names = list(providers)
    unknown = [p for p in names if p not in available]
    if not names or unknown:
        raise ConfigError(f"unknown or unavailable ONNX Runtime provider(s) {unknown or names}; "
                          f"available: {', '.join(available)}")
    return names


def session_options(threads: Optional[int] = None, spin: bool = False):
    """The ONNX Runtime session options OnnxGenerator (and the benchmark) use.

    All graph optimisations, sequential execution, memory-pattern planning on,
    one inter-op thread, and, unlike ONNX Runtime's default, intra-op threads
    that sleep rather than spin while they wait for work.

    NOTE: measured with bench/onnx_inference.py on a 2-core AMD EPYC shared
    with other jobs (load average 5-6), 2 threads, medians of three runs:
    DCGAN-64 batch 64 took 308-391 ms without spinning and 562-607 ms with it
    (eager PyTorch: 655-719 ms); DCGAN-32 batch 64 39-60 ms vs 73-123 ms;
    batch-1 medians were no worse (DCGAN-64: 4.6-7.7 ms vs 10.7-12.3 ms).
    Spinning threads burn the time slices that other processes, and the other
    thread of the same parallel section, need. The best case does favour
    spinning (DCGAN-32 batch 1 minimum: 0.35 ms vs 0.51 ms), so on a dedicated
    machine pass ``spin=True``.

    Args:
        threads: intra-op threads (``None``: ONNX Runtime's default).
        spin: allow idle intra-op threads to spin.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = True
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


class OnnxGenerator:
    """A fastgan generator exported to ONNX, run with ONNX Runtime.

    Args:
        path: an ``.onnx`` file written by :func:`fastgan.export.export_onnx`.
        providers: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"`` or a list of ONNX Runtime provider names.
        threads: intra-op threads for the CPU provider (``None``: ORT's default,
            one per physical core).
        spin: let idle intra-op threads spin (ONNX Runtime's default) instead
            of sleeping; see :func:`session_options`.

    Raises:
        CheckpointError: the file does not exist, is not an ONNX model, or has
            no fastgan metadata.
        ConfigError: an unknown or unavailable provider.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: ProvidersArg = "auto",
                 threads: Optional[int] = None, spin: bool = False):
        import onnxruntime as ort

        self.path = str(path)
        p = Path(path)
        if not p.exists():
            raise CheckpointError(f"ONNX file '{self.path}' does not exist")
        if not p.is_file():
            raise CheckpointError(f"'{self.path}' is not a file (expected an exported .onnx generator)")
        opts = session_options(threads=threads, spin=spin)
        chosen = resolve_providers(providers)
        try:
            self._session = ort.InferenceSession(self.path, opts, providers=chosen)
        except Exception as e:  # ORT's pybind exception types are not public
            text = str(e).strip().splitlines()
            detail = text[0] if text else type(e).__name__
            raise CheckpointError(f"'{self.path}' is not a loadable ONNX model ({detail[:200]})") from None
        props = self._session.get_modelmeta().custom_metadata_map
        self.info: GeneratorInfo = parse_metadata(props, self.path)
        graph_inputs = [i.name for i in self._session.get_inputs()]
        if graph_inputs != list(self.info.input_names):
            raise CheckpointError(f"'{self.path}' declares inputs {self.info.input_names} in its "
                                  f"metadata but the graph has {graph_inputs}")
        self._output = self._session.get_outputs()[0].name
        mismatch = self._shape_mismatch()
        if mismatch:
            raise CheckpointError(f"'{self.path}' does not match its own metadata: {mismatch}; "
                                  "export the generator again (fastgan export)")

    # ----------------------------------------------------------------- properties
    @property
    def z_dim(self) -> int:
        """Latent size (latents are drawn from N(0, I))."""
        return self.info.z_dim

    @property
    def out_shape(self) -> tuple:
        """Shape of one sample: ``(C, H, W)`` or ``(2,)``."""
        return self.info.out_shape

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for an unconditional generator."""
        return self.info.num_classes

    @property
    def vector_dim(self) -> int:
        """Size of the conditioning vectors of a vector-conditioned generator; 0 otherwise."""
        return self.info.vector_dim

    @property
    def class_names(self) -> list[str]:
        """Name of each class (index = label); empty for an unconditional generator."""
        return list(self.info.class_names)

    @property
    def value_range(self) -> Optional[tuple]:
        """``(lo, hi)`` of the float outputs, or ``None`` for points."""
        return self.info.value_range

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything the file says about itself (see :mod:`fastgan.export.metadata`)."""
        return self.info.to_dict()

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers the session uses."""
        return list(self._session.get_providers())

    def __repr__(self) -> str:
        return (f"OnnxGenerator('{self.path}', {self.info.generator_class}, z_dim={self.z_dim}, "
                f"out_shape={self.out_shape}, num_classes={self.num_classes}, "
                f"precision={self.info.precision}, providers={self.providers})")

    # ------------------------------------------------------------------- running
    def run(self, z: Any, labels: Any = None, vectors: Any = None) -> np.ndarray:
        """Generate from given latents.

        Args:
            z: latents, array-like (numpy array or CPU tensor) of floats shaped
                ``(N, z_dim)``, finite.
            labels: integer class labels shaped ``(N,)`` in ``[0, num_classes)``;
                required for a conditional generator, must be ``None`` otherwise.
            vectors: conditioning vectors shaped ``(N, vector_dim)`` (or one
                ``(vector_dim,)`` for all); required for a vector-conditioned
                generator, must be ``None`` otherwise.

        Returns:
            float32 ``(N, C, H, W)`` images in ``value_range`` or ``(N, 2)`` points.

        Raises:
            DataError: wrong shape, dtype, non-finite latents, bad or missing labels.
            ConfigError: missing, misshapen or non-finite vectors.
        """
        from fastgan.sampling import check_vectors

        z32 = self._check_z(z)
        feeds = {"z": z32}
        lab = self._check_labels(labels, len(z32))
        if lab is not None:
            feeds["labels"] = lab
        vec = check_vectors(vectors, len(z32), self.vector_dim)
        if vec is not None:
            feeds["vectors"] = vec.numpy()
        return self._session.run([self._output], feeds)[0]

    def sample(self, n: int, seed: int = 0, labels: Any = None, output: str = "uint8",
               batch_size: int = 256, vectors: Any = None) -> np.ndarray:
        """Draw ``n`` samples with latents ``z ~ N(0, I)``.

        Latents come from a CPU ``torch.Generator`` seeded with ``seed``, drawn
        ``batch_size`` at a time, exactly as ``fastgan sample`` draws them on
        the CPU, so the same seed gives the same samples as the PyTorch
        generator (up to the export's parity error). The draws depend on
        ``batch_size`` too: keep the default (256, as ``fastgan sample``) to
        reproduce them.

        Args:
            n: number of samples.
            seed: seed of the latent draws.
            labels: for a conditional generator: ``None`` (classes in turn,
                ``i % num_classes``), one int for all samples, or ``(n,)`` ints.
            output: ``"uint8"`` for images as uint8 ``(N, H, W, C)``, or
                ``"float"`` for the raw float32 output ``(N, C, H, W)``.
                Points are always float32 ``(N, 2)``.
            batch_size: samples per ONNX Runtime call.
            vectors: for a vector-conditioned generator: ``(n, vector_dim)``,
                or one ``(vector_dim,)`` vector for every sample.
        """
        if output not in ("uint8", "float"):
            raise ConfigError(f"output must be 'uint8' or 'float', got {output!r}")
        x = np.concatenate(list(self.sample_batches(n, seed=seed, labels=labels, batch_size=batch_size,
                                                    vectors=vectors)), axis=0)
        if output == "float" or not self.info.is_image:
            return x
        return self.to_uint8(x)

    def sample_batches(self, n: int, seed: int = 0, labels: Any = None, batch_size: int = 256,
                       vectors: Any = None) -> Iterator[np.ndarray]:
        """:meth:`sample` with ``output="float"``, batch by batch: memory bounded by one batch, whatever ``n``.

        Arguments are checked now; the batches are drawn as they are consumed.

        Args:
            n: number of samples.
            seed: seed of the latent draws.
            labels: as for :meth:`sample`.
            batch_size: samples per ONNX Runtime call.
            vectors: as for :meth:`sample`.
        """
        import torch

        from fastgan.sampling import check_vectors

        _check_count("n", n)
        _check_count("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        n, batch_size = int(n), int(batch_size)
        lab = self.sample_labels(n, labels)
        vec = check_vectors(vectors, n, self.vector_dim)
        g = torch.Generator().manual_seed(int(seed))

        def draw() -> Iterator[np.ndarray]:
            for i in range(0, n, batch_size):
                z = torch.randn(min(batch_size, n - i), self.z_dim, generator=g).numpy()
                yield self.run(z, None if lab is None else lab[i:i + batch_size],
                               None if vec is None else vec[i:i + batch_size])
        return draw()

    def sample_labels(self, n: int, labels: Any = None) -> Optional[np.ndarray]:
        """The labels ``sample`` uses: ``None`` when unconditional, else int64 ``(n,)``.

        Args:
            n: number of samples.
            labels: ``None`` (classes in turn), one int (or a one-element
                sequence) for all samples, or ``(n,)`` ints.
        """
        if self.num_classes == 0:
            if labels is not None:
                raise DataError("labels given, but this generator is unconditional (num_classes = 0)")
            return None
        if labels is None:
            return np.arange(n, dtype=np.int64) % self.num_classes
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        arr = np.asarray(labels)
        if arr.size == 1:
            arr = np.full(n, arr.reshape(()), dtype=arr.dtype)
        return self._check_labels(arr, n)

    def to_uint8(self, x: np.ndarray) -> np.ndarray:
        """Map float images ``(N, C, H, W)`` in ``value_range`` to uint8 ``(N, H, W, C)``.

        Args:
            x: output of :meth:`run` for an image generator.
        """
        lo, hi = self.value_range or (-1.0, 1.0)
        u = np.rint((np.asarray(x, dtype=np.float32) - lo) * (255.0 / (hi - lo)))
        return np.clip(u, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    # ---------------------------------------------------------------- validation
    def _shape_mismatch(self) -> Optional[str]:
        """How the graph's input and output shapes disagree with the metadata, or ``None``.

        Named dimensions (the dynamic batch) match anything; fixed ones must equal the metadata.
        """
        def agree(dims, want) -> bool:
            return len(dims) == len(want) and all(not isinstance(d, int) or d == w for d, w in zip(dims, want))

        z = self._session.get_inputs()[0]
        out = self._session.get_outputs()[0]
        if not agree(list(z.shape), [None, self.info.z_dim]):
            return f"input '{z.name}' has shape {list(z.shape)} but the metadata says z_dim={self.info.z_dim}"
        if out.name != self.info.output_name:
            return f"the graph's output is '{out.name}' but the metadata names '{self.info.output_name}'"
        if not agree(list(out.shape), [None, *self.info.out_shape]):
            return (f"output '{out.name}' has shape {list(out.shape)} but the metadata says samples of shape "
                    f"{list(self.info.out_shape)}")
        return None

    def _check_z(self, z: Any) -> np.ndarray:
        if hasattr(z, "detach"):  # a torch tensor
            z = z.detach().cpu().numpy()
        try:
            arr = np.asarray(z)
        except Exception as e:
            raise DataError(f"z must be an array of floats shaped (N, {self.z_dim}), got {type(z).__name__} ({e})") \
                from None
        if arr.dtype.kind != "f":
            raise DataError(f"z must hold floats, got dtype {arr.dtype} (draw it with standard_normal)")
        if arr.ndim != 2 or arr.shape[1] != self.z_dim or arr.shape[0] < 1:
            raise DataError(f"z must have shape (N, {self.z_dim}) with N >= 1, got {tuple(arr.shape)}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DataError(f"z holds {int((~np.isfinite(arr)).sum())} NaN or infinite values")
        return arr

    def _check_labels(self, labels: Any, n: int) -> Optional[np.ndarray]:
        k = self.num_classes
        if k == 0:
            if labels is not None:
                raise DataError("labels given, but this generator is unconditional (num_classes = 0)")
            return None
        if labels is None:
            raise DataError(f"this generator is conditional ({k} classes): pass labels shaped ({n},)")
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu":
            raise DataError(f"labels must be integers, got dtype {arr.dtype}")
        if arr.shape != (n,):
            raise DataError(f"labels must have shape ({n},) to match z, got {tuple(arr.shape)}")
        if arr.min() < 0 or arr.max() >= k:
            raise DataError(f"labels must be in [0, {k - 1}], got values from {arr.min()} to {arr.max()}")
        return arr.astype(np.int64)


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
