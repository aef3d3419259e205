"""The napari plugin (`pip install -e '.[napari]'`): a reader for every micrograph format the tool
reads, giving image layers at their physical scale (nm); widgets to segment, find atoms and choose
which micrographs to label next; a simulated sample micrograph.

Only `widgets` needs napari, magicgui and Qt; `reader`, `sample` and `layers` (the logic the
widgets call, itself calling evaluate.api and evaluate.apply) import without them, so the plugin's
logic is tested without a display. The manifest is napari.yaml (npe2).
"""
