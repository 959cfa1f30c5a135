"""Per-level read-out: vertebra and disc instances named from the sacrum up, with measurements in mm.

``read_levels(label_image)`` takes a 3-class label map (1 vertebra, 2 disc, 3 spinal
canal) and returns a :class:`LevelsResult`; :mod:`spineseg.levels.outputs` writes it.
Label values follow :mod:`spineseg.levels.convention`.
"""
from spineseg.levels.convention import CANAL_VALUE, SACRUM_VALUE, disc_value, name_of_value, vertebra_value
from spineseg.levels.readout import levels_image, read_levels, read_levels_canonical
from spineseg.levels.result import LevelsResult, Review, Structure

__all__ = ["read_levels", "read_levels_canonical", "levels_image", "LevelsResult", "Structure", "Review",
           "vertebra_value", "disc_value", "name_of_value", "CANAL_VALUE", "SACRUM_VALUE"]
