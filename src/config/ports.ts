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
