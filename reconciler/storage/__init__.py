"""Storage driver: secure layer unpack, the layer store, container snapshots, pod volumes.

Modules (import the one you need; this package imports nothing on its own):

* ``unpack``    — ``unpack_layer(blob, dest, diff_id=…, lowers=…)``: one hostile-safe layer unpack
* ``layers``    — ``LayerStore``: layers keyed by chain ID, unpacked once, shared, GC'd
* ``snapshots`` — ``OverlaySnapshotter``: the ``SnapshotDriver`` (overlay, copy fallback)
* ``volumes``   — ``HostVolumes``: the ``VolumeDriver`` (emptyDir, hostPath, configMap, secret, claims)
* ``mounts``    — mount/umount and mountinfo helpers used by the above
"""
