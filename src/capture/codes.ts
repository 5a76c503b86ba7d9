/**
 * Stable error codes of the capture room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const CaptureCode = {
  /** The native addon is not built or cannot be loaded. */
  NativeMissing: 'SKEIN_CAPTURE_NATIVE_MISSING',
  /** The agent lacks CAP_BPF, CAP_NET_ADMIN or CAP_SYS_ADMIN. */
  CapabilityMissing: 'SKEIN_CAPTURE_CAPABILITY_MISSING',
  /** The kernel is older than the programs need. */
  KernelTooOld: 'SKEIN_CAPTURE_KERNEL_TOO_OLD',
  /** The kernel release string could not be read. */
  KernelUnknown: 'SKEIN_CAPTURE_KERNEL_UNKNOWN',
  /** No cgroup v2 hierarchy (or the configured cgroup directory) exists. */
  Cgroup2Missing: 'SKEIN_CAPTURE_CGROUP2_MISSING',
  /** bpffs is not mounted and could not be mounted. */
  BpffsMissing: 'SKEIN_CAPTURE_BPFFS_MISSING',
  /** Pinned maps from another build with other map shapes are in the way. */
  StalePins: 'SKEIN_CAPTURE_STALE_PINS',
  /** A compiled BPF object is not where it should be. */
  BpfObjectMissing: 'SKEIN_CAPTURE_BPF_OBJECT_MISSING',
  /** The kernel refused to load a BPF object or a program is missing from it. */
  LoadFailed: 'SKEIN_CAPTURE_LOAD_FAILED',
  /** A program could not be attached to the cgroup. */
  AttachFailed: 'SKEIN_CAPTURE_ATTACH_FAILED',
  /** Capture was used before start() or after stop(). */
  NotStarted: 'SKEIN_CAPTURE_NOT_STARTED',
  /** Capture options are out of range or inconsistent. */
  InvalidOptions: 'SKEIN_CAPTURE_INVALID_OPTIONS',
  /** A pod record cannot be enrolled as given (uid too long, bad address...). */
  InvalidPod: 'SKEIN_CAPTURE_INVALID_POD',
  /** A string or byte array is not an IP address. */
  InvalidAddress: 'SKEIN_CAPTURE_INVALID_ADDRESS',
  /** A BPF map record holds an address family skein does not know. */
  BadRecord: 'SKEIN_CAPTURE_BAD_RECORD',
  /** The pod shares the agent's network namespace; it is not captured. */
  HostNetworkPod: 'SKEIN_CAPTURE_HOST_NETWORK_POD',
  /** A pod could not be entered into the BPF maps. */
  EnrollFailed: 'SKEIN_CAPTURE_ENROLL_FAILED',
  /** Every pod slot of the BPF maps is in use. */
  SlotsExhausted: 'SKEIN_CAPTURE_SLOTS_EXHAUSTED',
  /** A pod's network namespace could not be entered. */
  NetnsUnavailable: 'SKEIN_CAPTURE_NETNS_UNAVAILABLE',
  /** The agent's listeners could not be opened inside a pod's netns. */
  ListenFailed: 'SKEIN_CAPTURE_LISTEN_FAILED',
  /**
   * A port the agent needs inside a pod's netns (outbound, inbound plaintext or tunnel) is
   * already held by the pod's app: the pod is kept captured and refusing (its connects fail,
   * inbound plaintext is dropped) until the port is free, never released to plaintext.
   */
  PortHeld: 'SKEIN_CAPTURE_PORT_HELD',
  /** No original destination is recorded for an accepted connection. */
  NoOriginalDst: 'SKEIN_CAPTURE_NO_ORIGINAL_DST',
  /** The kubelet has no cgroup for the pod on this node (yet): its netns cannot be found. */
  PodCgroupNotFound: 'SKEIN_CAPTURE_POD_CGROUP_NOT_FOUND',
  /** The pod has cgroups in more than one QoS class; skein does not guess which is its. */
  PodCgroupAmbiguous: 'SKEIN_CAPTURE_POD_CGROUP_AMBIGUOUS',
  /** The pod's cgroup holds no live process to find its netns by. */
  PodNoProcess: 'SKEIN_CAPTURE_POD_NO_PROCESS',
  /** No netns of the pod's processes holds every IP of the pod: none is trusted. */
  NetnsIpMismatch: 'SKEIN_CAPTURE_NETNS_IP_MISMATCH',
  /** More than one netns of the pod's processes holds the pod's IPs; none is trusted. */
  NetnsAmbiguous: 'SKEIN_CAPTURE_NETNS_AMBIGUOUS',
  /** A pod has its cap of connects in progress and of connects waiting already; refused at once. */
  TooManyConnects: 'SKEIN_CAPTURE_TOO_MANY_CONNECTS',
  /** A connect from inside a pod's netns got no answer in time (SYNs dropped). */
  ConnectTimeout: 'SKEIN_CAPTURE_CONNECT_TIMEOUT',
  /** A connect from inside a pod's netns was refused or unreachable (errno in details). */
  ConnectFailed: 'SKEIN_CAPTURE_CONNECT_FAILED',
  /** `skein cni install|uninstall` found no conflist to chain skein-cni into, or no skein-cni binary to copy. */
  CniNoConflist: 'SKEIN_CAPTURE_CNI_NO_CONFLIST',
  /** A conflist in the CNI conf dir is malformed (file, field and reason in the message); it is left untouched. */
  CniConflistInvalid: 'SKEIN_CAPTURE_CNI_CONFLIST_INVALID',
  /** Writing the plugin binary or the conflist failed (permissions, disk). */
  CniInstallFailed: 'SKEIN_CAPTURE_CNI_INSTALL_FAILED',
} as const;
