"""The kinds a policy's ``match.kinds`` / ``exclude.kinds`` may name: every kind guywire judges.

Plain names, kept here because the policy model (and so the CRD's enum) sits below the modules that read
the kinds; ``tests/unit/test_policy_bounds.py`` checks this list against ``workload`` and ``aikinds``."""
from __future__ import annotations

JUDGED_KINDS: tuple[str, ...] = (
    # Kubernetes workloads (workload.WORKLOAD_KINDS) and Services (rules with target="service")
    "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job", "CronJob", "Service",
    # AI platforms (aikinds.AI_KINDS)
    "InferenceService", "ServingRuntime", "ClusterServingRuntime", "RayCluster", "RayService", "RayJob",
    "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "TrainJob", "LeaderWorkerSet", "JobSet",
    "KnativeService",
)

# Namespaces whose workloads guywire never judges (DESIGN.md: the cluster's own system components), in
# check, the operator and admission alike. check says how many it left out, and -v names each.
NEVER_JUDGED_NAMESPACES: frozenset[str] = frozenset({"kube-system"})
