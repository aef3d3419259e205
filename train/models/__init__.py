"""A model's whole life: the network (unet), its checkpoints, its runtimes (TorchScript, ONNX
Runtime, eager on a GPU), the registry of packaged models and the exporter (bioimage.io, ONNX)."""
