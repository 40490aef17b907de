"""Manifests: files → documents (with line marks) → schema check → field checks → model objects.

``load_manifests(paths)`` never raises for bad input: it returns every object it could read and
every problem it found, each naming file, line, column and field path. A file that cannot be
read or parsed is listed in ``unreadable``: the engine must not prune what such a file might
describe ("hold deletes until every source was read").

Every problem is reported at once. An object with schema errors is repaired in a private copy
(unknown keys dropped, wrong values replaced by neutral placeholders) so that the field and
cross-object checks still run on the rest of it; their findings at a place the schema already
complained about are dropped, so one mistake gives one message.

The modules, in the order a document meets them:

- ``loader``      the entry points and the one document loop; the warn-once policy
- ``documents``   text → documents with positions (YAML; ``json_reader`` for JSON; ``yaml_errors``
                  words syntax errors; ``positions`` holds the types of places)
- ``schema``      the JSON Schemas shipped in the package: validation, repair, the schema cache
- ``kinds``       the field checks of one object, by kind (``fields``: metadata, names, quantities;
                  ``pods``: pod specs, containers, Deployments); ``checker`` is how they report
- ``cross``       checks across objects: duplicates, references, host ports
- ``links``       which symbolic links in a manifest directory are followed; ``hostfacts``: what
                  the checks know about the host (its memory)
"""

from reconciler.manifests.links import refuse_links
from reconciler.manifests.loader import (
    FileLoad,
    ManifestSet,
    combine_files,
    load_file,
    load_manifests,
    load_objects,
)

__all__ = ["FileLoad", "ManifestSet", "combine_files", "load_file", "load_manifests", "load_objects", "refuse_links"]
