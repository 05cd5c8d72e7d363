"""The dependency graph between workloads and Services (``core``), Istio retries on its edges (``mesh``),
copy-on-write views it is built over (``overlay``), and failures propagated through it (``simulate``). Pure."""
