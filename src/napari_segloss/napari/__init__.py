"""The napari layer: widgets and reader/writer/sample-data hooks. The only Qt code."""
