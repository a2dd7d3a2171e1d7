"""The ServerlessOS Kubernetes API (group serverlessos.io), defined once as pydantic models.

`make crds` turns these models into the CRD manifests in crds/ (see crdgen.py); the
operator parses every object it reads into them (v1alpha1.py).
"""
