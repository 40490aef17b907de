"""Frozen dataclasses of the supported Kubernetes subset (``model.kube``) and small pure helpers.

Import the submodule you need: the package itself imports nothing, so that a light module
(``model.names``) does not pay for the ~50 dataclasses of ``model.kube``.
"""
