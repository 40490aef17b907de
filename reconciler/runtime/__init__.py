"""The container runtime driver: OCI config generation (pure), runc under conmon, infra containers.

``oci``, ``seccomp``, ``users`` and ``pod_files`` turn a desired pod into files and documents
without touching the host; ``driver.RuncRuntime`` is the ``RuntimeDriver`` that runs them.
Nothing heavy is imported here so that the CLI starts fast.
"""
