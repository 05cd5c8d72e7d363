"""Kubernetes at the edge: the operator's API client (``client``), the CustomResourceDefinitions generated from
the models (``crd``), and the ValidatingWebhookConfiguration (``webhook_config``)."""
