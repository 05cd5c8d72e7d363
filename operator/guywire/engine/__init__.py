"""The engine: policies x workloads x graph -> findings (``core``), admission decisions (``admission``), and
cluster complexity as numbers, changes and regressions (``insights``). Pure: no Kubernetes, no I/O."""
