"""The kopf operator: handlers, indexes, annotations, events, status and the admission webhook. No rule logic."""
