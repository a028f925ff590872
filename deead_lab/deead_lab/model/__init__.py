"""The model definitions (torch): the demo VLA, the Llama VLA, adapters for other VLAs, their weights and
the export to per-layer ONNX and torch.export programs that the runtime's engines run.

The frame encoder each model reads its inputs with stays in the runtime (deead_ros.model.encoding):
the vehicle encodes frames; only the workstation builds and exports models.
"""
