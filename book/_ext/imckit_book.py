"""Sphinx extension for the imckit book.

It marks the build for the chapter kernels: ``IMCKIT_BOOK_BUILD=1`` is inherited by every kernel
the build starts, so :func:`imckit.widgets.explore` precomputes its whole slider grid and the web
page keeps working sliders without a kernel. In JupyterLab the variable is unset and explorers
recompute live.
"""
import os


def setup(app):
    os.environ["IMCKIT_BOOK_BUILD"] = "1"
    return {"parallel_read_safe": True, "parallel_write_safe": True}
