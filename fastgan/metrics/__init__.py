"""Quality and mode-collapse metrics for GANs.

Pure functions over feature sets (tensors or arrays, computed in float64):

- :func:`frechet_distance` (FID's distance), :func:`kid` (kernel distance),
  :func:`precision_recall` (k-NN manifolds);
- :func:`mixture_mode_metrics` (modes captured, high-quality fraction and
  reverse KL on 2-D mixtures, as in VEEGAN / PacGAN) and
  :func:`class_coverage` (classes found by a classifier);
- :func:`pixel_frechet_distance`: digits against the real digits in their
  native 8x8 pixel space.

Feature extractors: :func:`load_digits_classifier` (trained once on
scikit-learn's digits and cached), :class:`InceptionFeatures` (FID-standard
weights from a file you supply) or any callable ``x -> (N, D)``.

:func:`evaluate` samples a generator and computes the metrics its data call
for; :func:`plot_history` draws a run's curves. Importing this package trains
nothing and touches no file.
"""

from .cache import cache_dir
from .classifier import CLASSIFIER_VERSION, DigitsClassifier, load_digits_classifier, train_digits_classifier
from .evaluate import METRICS, check_metrics, default_metrics, evaluate, evaluate_cli, evaluate_samples
from .fid import feature_stats, frechet_distance, frechet_distance_from_stats
from .inception import InceptionFeatures, inception_available, inception_path, load_inception
from .mmd import kid
from .modes import class_coverage, mixture_mode_metrics, reverse_kl
from .pixel_fd import native_digits, pixel_frechet_distance, to_native_pixels
from .plot import plot_history
from .prdc import precision_recall

__all__ = [
    "frechet_distance", "frechet_distance_from_stats", "feature_stats", "kid", "precision_recall",
    "mixture_mode_metrics", "class_coverage", "reverse_kl",
    "pixel_frechet_distance", "to_native_pixels", "native_digits",
    "DigitsClassifier", "load_digits_classifier", "train_digits_classifier", "CLASSIFIER_VERSION",
    "InceptionFeatures", "load_inception", "inception_path", "inception_available", "cache_dir",
    "evaluate", "evaluate_samples", "evaluate_cli", "default_metrics", "check_metrics", "METRICS",
    "plot_history",
]
