"""The code that runs inside Triton: the Python-backend models and the embedded ``onnxruntime`` backend.

These files are programs of their own. Triton's Python stub runs them with the
standard library, numpy, tokenizers, onnxruntime and Triton's
``triton_python_backend_utils`` only -- never ``tritonstack`` (checked by
``tests/in_triton/test_in_triton.py``) -- so they are copied beside each ``model.py``
(``manifest.py`` lists which go where) and load their siblings by path
(``beside.py``). ``contract.py`` is the one module both sides read: the
package imports it, the served models load the copy beside them.
"""
