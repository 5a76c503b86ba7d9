/**
 * The ports the agent listens on inside each enrolled pod's netns, numbered as Istio's for
 * operators who know them. Capture opens them; the proxy serves and dials them.
 */
export const MeshPort = {
  /** Redirected outbound connections of the pod (cgroup/connect4 and connect6). */
  Outbound: 15001,
  /** Plaintext from outside the mesh, steered by sk_lookup. */
  InboundPlaintext: 15006,
  /** mTLS HTTP/2 CONNECT from other agents (HBONE). */
  Tunnel: 15008,
} as const;

/** Ports of the agent's and the controller's own endpoints (host network, not pod netns). */
export const ComponentPort = {
  /** The agent's Prometheus metrics, /metrics (Istio's 15020). */
  AgentMetrics: 15020,
  /** The agent's readiness, /healthz/ready (Istio's 15021). */
  AgentReady: 15021,
  /** The controller's Prometheus metrics, /metrics (istiod's monitoring port, 15014). */
  ControllerMetrics: 15014,
} as const;
