"""``python -m xyz2image_gpu.cli``."""

from .main import main

main()
