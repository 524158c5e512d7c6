"""GPU scheduling: inventory, hierarchical queues, fair-share allocation, preemption,
fractional and gang placement, a simulator and a Kubernetes (KAI Scheduler) export."""
