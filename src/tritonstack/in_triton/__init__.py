"""The code that runs inside Triton: the Python-backend models and the embedded ``onnxruntime`` backend.

These files are programs of their own. Triton's Python stub runs them with the
standard library, numpy, tokenizers, onnxruntime and Triton's
``triton_python_backend_utils`` only -- never ``tritonstack`` -- so they are
copied beside each ``model.py`` and load their siblings by path.
``contract.py`` is the one module both sides read.
"""
