"""Spec-compatibility shim: ``from utils.dataset import PBRDataset`` run from this folder.

Not part of the installed wheel (only the ``neuropbr`` import package is); the code is ``neuropbr.utils``.
"""
