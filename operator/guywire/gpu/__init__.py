"""GPU node health: NVML readings, classification and the node agent."""
