"""Export run folders for inference outside nlpipe: ONNX graphs + a numpy/onnxruntime runner (docs/export.md)."""

from .onnx_export import OnnxExportResult, export_onnx, quantize_int8, verify_onnx_export
from .onnx_serving import OnnxPredictor, onnx_predictor

__all__ = ["OnnxExportResult", "export_onnx", "quantize_int8", "verify_onnx_export", "OnnxPredictor",
           "onnx_predictor"]
