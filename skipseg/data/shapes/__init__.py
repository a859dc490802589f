"""The embedded default dataset: procedurally generated scenes written in PASCAL VOC layout.

Each of the 20 object classes is a shape family, named by its shape in `classes.txt` (`SHAPE_NAMES`:
plus, ring, triangle, …); colour and texture are drawn independently of the class except for a weak,
strongly overlapping hue preference, so a model has to look at shape. Objects range from tiny (5 % of the image side) to image-filling (90 %),
1-6 per image, occluding each other over a cluttered background (gradients, blotches, stripes, lines
and jagged distractor blobs labelled background). Masks carry a 255 band on object borders as VOC does.

Image `shapes_<n>` is a pure function of (seed, n, size): the same arguments give byte-identical
files whatever the number of workers, and ids keep their content when --train/--val change.
"""
from skipseg.data.shapes.geometry import SHAPE_NAMES
from skipseg.data.shapes.render import (MAX_OBJECTS, NUM_CLASSES, SCALE_RANGE, SceneSpec, band_radius,
                                        render_shapes_image, void_band)
from skipseg.data.shapes.writer import META_FILE, format_summary, generate_shapes

__all__ = ["MAX_OBJECTS", "META_FILE", "NUM_CLASSES", "SCALE_RANGE", "SHAPE_NAMES", "SceneSpec", "band_radius",
           "format_summary", "generate_shapes", "render_shapes_image", "void_band"]
