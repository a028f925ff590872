"""The model's input contract on the vehicle: the frame encoder a manifest names (encoding.py, numpy).

The model definitions, their training and export live in the workstation's package (deead_lab.model).
"""
