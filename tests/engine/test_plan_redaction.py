"""`podplay plan -o json` shows no credential: secret files, env values, imagePullSecrets."""

from __future__ import annotations

PULL = ('{"auths": {"reg.example:5000": {"username": "bob", "password": "PULL-PASS-1"}, '
        '"other.example": {"auth": "Ym9iOkFVVEgtUEFTUy0y", "identitytoken": "ID-TOKEN-3"}}}')  # bob:AUTH-PASS-2


def test_plan_json_redacts_every_credential(engine):
    engine.write("a.yaml", f"""apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: FILE-SECRET-4}}
---
apiVersion: v1
kind: Secret
metadata: {{name: pull}}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{PULL}'
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  imagePullSecrets: [{{name: pull}}]
  containers:
  - name: app
    image: reg.example:5000/app:1
    env:
    - {{name: P, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: L, value: INLINE-5}}
    volumeMounts: [{{name: c, mountPath: /c}}]
  volumes:
  - {{name: c, secret: {{secretName: creds}}}}
""")
    result = engine.up(dry_run=True)
    full = result.plan.dumps()
    assert "PULL-PASS-1" in full  # the plan itself carries them (apply needs them)…
    shown = result.plan.dumps(redact=True) + result.plan.render(verbose=True)
    for secret in ("PULL-PASS-1", "AUTH-PASS-2", "ID-TOKEN-3", "FILE-SECRET-4", "INLINE-5"):
        assert secret not in shown, secret  # …what a user sees does not
