"""The state database, one class per concern over one sqlite connection.

    db.py        the connection (one lock for every statement and transaction) and the schema
    view.py      a read-only view for commands that must not create or lock a store (`ps`)
    journal.py   transactions and their steps: begin, mark, finish, open ones, history
    owned.py     what podplay owns: pods, claims (the diff's "last applied")
    keepers.py   what keepers report: their records (sources), probe results, events
    rollouts.py  Deployments' revisions and rollback pins
    meta.py      small facts (fingerprints) and the last good version of each watched file

``reconciler.state.StateStore`` opens the read-write store and exposes these as
``state.journal``, ``state.owned``, ``state.keepers``, ``state.rollouts`` and ``state.meta``.
Every module here imports only the standard library, so that `podplay ps` can read probe
results and keepers' schedules through ``view.open_view`` without loading the engine.
"""
