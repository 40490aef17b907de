"""Images: references, registries.conf and auth files, the registry client, the content store.

Entry points (import the module you need; this package import is cheap):

    from reconciler.images.driver import LocalImageStore      # the ImageStore driver
    from reconciler.images.reference import parse_reference   # pure reference parsing
    from reconciler.images.login import login, logout         # auth.json management
    from reconciler.images.ingest import ingest_image         # any BlobSource → verified store

Module map: ``reference`` (pure grammar, digests) · ``platform`` (os/arch/variant matching) ·
``manifest`` (strict manifest/index/config parsing) · ``config`` (registries.conf, credentials) ·
``registry`` (Distribution API client) · ``store`` (blobs and image records on disk) ·
``ingest`` (the verified copy of one image) · ``driver`` (pull policies, lookups, prune) ·
``progress`` (terminal progress) · ``login``.
"""
