"""Memorization and privacy: does the synthetic set contain copies of training images?

The package's parts, in the order the evaluation uses them:

- :mod:`.scan`: exhaustive nearest-neighbour scans (pixel correlation over the 8 rotations/flips,
  cosine similarity of feature vectors), chunked matrix products on CPU or GPU;
- :mod:`.search`: the copy search in pixel space (shortlist, then translations, scale/crop,
  small rotations and tile-wise scoring);
- :mod:`.descriptor`: the learned copy descriptor (SSCD-style contrastive encoder trained on
  the real training split only);
- :mod:`.null`: the held-out null of each detector's score, its modelled upper tail and the
  per-image p-values;
- :mod:`.stats`: multiplicity corrections, the exact exceedance test, confidence bounds;
- :mod:`.planted`: planted copies of training images that measure each detector's power;
- :mod:`.evidence`: everything above assembled into the evaluation's memorization section.
"""

from synthgate.evaluation.memorization.scan import (
    RESCORE,
    NNResult,
    _normalise,
    cosine_nn,
    dihedral,
    distribution,
    pixel_nn,
)

__all__ = ["RESCORE", "NNResult", "_normalise", "cosine_nn", "dihedral", "distribution", "pixel_nn"]
