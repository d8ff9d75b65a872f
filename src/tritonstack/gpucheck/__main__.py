"""``python -m tritonstack.gpucheck``: what ``scripts/gpu-check`` runs."""

import sys

from tritonstack.gpucheck import main

sys.exit(main())
