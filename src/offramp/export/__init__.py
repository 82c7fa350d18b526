"""Models written in formats other runtimes read: one ONNX graph from token ids to calibrated
probabilities (:func:`offramp.export.onnx.export_onnx`)."""

from offramp.export.onnx import FORMATS, ExportResult, export_model, export_onnx

__all__ = ["FORMATS", "ExportResult", "export_model", "export_onnx"]
