/**
 * Stable error codes of the agent room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const AgentCode = {
  /** The command line is missing a flag or combines flags that exclude each other. */
  Usage: 'SKEIN_AGENT_USAGE',
  /** A pod is captured but its certificate is not there yet (CA away): its mesh traffic is refused until it is. */
  IdentityPending: 'SKEIN_AGENT_IDENTITY_PENDING',
  /** A pod to serve has no known network namespace. */
  NoNetns: 'SKEIN_AGENT_NO_NETNS',
  /** Looking for a pod's netns in the kubelet's cgroups failed for a reason of the host's (I/O). */
  NetnsDiscoveryFailed: 'SKEIN_AGENT_NETNS_DISCOVERY_FAILED',
  /** An outbound connection arrived without a recorded original destination; it is refused. */
  NoOriginalDst: 'SKEIN_AGENT_NO_ORIGINAL_DST',
  /** A graceful stop took longer than its grace period; the process exits anyway. */
  StopTimeout: 'SKEIN_AGENT_STOP_TIMEOUT',
  /** An exception reached the top of the event loop (logged, not fatal). */
  UncaughtException: 'SKEIN_AGENT_UNCAUGHT',
  /** A promise rejection nobody handled (logged, not fatal). */
  UnhandledRejection: 'SKEIN_AGENT_UNHANDLED',
  /** The BPF counter map could not be read for a metrics scrape (the scrape still answers). */
  MetricsUnreadable: 'SKEIN_AGENT_METRICS_UNREADABLE',
  /** --admin-socket names a file that is not a socket (it is never replaced). */
  AdminSocketPath: 'SKEIN_AGENT_ADMIN_SOCKET_PATH',
  /** Agent upgrade: the handover between the old and the new agent failed; the old one serves on (the new one exits). */
  HandoverFailed: 'SKEIN_AGENT_HANDOVER_FAILED',
  /** Agent upgrade: the new agent did not serve every pod (config, certificates) in time; it gives up and the old one serves on. */
  UpgradeNotReady: 'SKEIN_AGENT_UPGRADE_NOT_READY',
  /** Agent upgrade: the old agent's drain timeout passed with connections open; L4 ones are ended with a FIN, the rest closed. */
  DrainTimeout: 'SKEIN_AGENT_DRAIN_TIMEOUT',
  /** --cni-socket names a file that is not a socket (it is never replaced). */
  CniSocketPath: 'SKEIN_AGENT_CNI_SOCKET_PATH',
  /** A CNI call skein-cni forwarded is malformed (env, CNI_ARGS, config, prevResult): refused with a CNI error. */
  CniBadRequest: 'SKEIN_AGENT_CNI_BAD_REQUEST',
  /** CNI ADD for a pod the agent's config does not hold (yet): refused, the runtime retries. */
  CniPodUnknown: 'SKEIN_AGENT_CNI_POD_UNKNOWN',
  /** CNI_NETNS does not hold the pod's IPs from prevResult, or is the host's: nothing is captured. */
  CniNetnsMismatch: 'SKEIN_AGENT_CNI_NETNS_MISMATCH',
  /** Capturing a new meshed pod at CNI ADD failed: the ADD fails, the pod does not start uncaptured. */
  CniCaptureFailed: 'SKEIN_AGENT_CNI_CAPTURE_FAILED',
  /** CNI CHECK of a meshed pod found it not captured in the namespace given. */
  CniCheckFailed: 'SKEIN_AGENT_CNI_CHECK_FAILED',
  /** skein-cni could not reach the agent's socket: ADD and CHECK fail (code 11, try again later), DEL succeeds. */
  CniUnreachable: 'SKEIN_AGENT_CNI_UNREACHABLE',
  /** skein-cni had no complete answer from the agent within its timeout_ms: ADD fails (code 11). */
  CniTimeout: 'SKEIN_AGENT_CNI_TIMEOUT',
} as const;
