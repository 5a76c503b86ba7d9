/** Who a workload is, from the environment the lab (or a Kubernetes downward API) gives it. */
export interface PodIdentity {
  pod: string;
  namespace: string;
  node: string;
  ip: string;
}

export function podIdentity(env = process.env): PodIdentity {
  return {
    pod: env.POD_NAME ?? 'unknown',
    namespace: env.POD_NAMESPACE ?? 'unknown',
    node: env.NODE_NAME ?? 'unknown',
    ip: env.POD_IP ?? 'unknown',
  };
}
