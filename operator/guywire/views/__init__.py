"""Views over Kubernetes objects: workloads (``workload``), the pod templates inside AI custom resources
(``aikinds``), the ``guywire.dev/*`` annotations (``annotations``), and the set the engine reads (``inventory``). Pure."""
