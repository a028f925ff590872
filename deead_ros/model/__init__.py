"""The demo VLA (torch), its weights format, adapters for other VLAs, and export to per-layer ONNX.

Nothing here is imported by the node at run time except through the torch reference backend.
"""
