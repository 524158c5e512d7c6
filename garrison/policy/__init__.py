"""Authorization decisions at every boundary: scopes, tenant isolation, then Cedar."""

from garrison.policy.engine import Decision, PolicyEngine, Resource

__all__ = ["Decision", "PolicyEngine", "Resource"]
