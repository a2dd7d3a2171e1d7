"""The ServerlessOS Kubernetes API (group serverlessos.io), defined once as pydantic models.

`make crds` turns these models into the CRD manifests in crds/ (see crdgen.py).
"""
