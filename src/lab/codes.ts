/**
 * Stable error codes of the lab room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const LabCode = {
  /** The lab needs root (network namespaces, cgroups). */
  NotRoot: 'SKEIN_LAB_NOT_ROOT',
  /** No cgroup v2 hierarchy is mounted. */
  Cgroup2Missing: 'SKEIN_LAB_CGROUP2_MISSING',
  /** A command the lab runs (ip, nft...) is not installed. */
  ToolMissing: 'SKEIN_LAB_TOOL_MISSING',
  /** A command the lab runs failed. */
  CommandFailed: 'SKEIN_LAB_COMMAND_FAILED',
  /** A process could not be started. */
  SpawnFailed: 'SKEIN_LAB_SPAWN_FAILED',
  /** A scenario file cannot be read. */
  ScenarioUnreadable: 'SKEIN_LAB_SCENARIO_UNREADABLE',
  /** A scenario file has a field of the wrong shape. */
  ScenarioInvalid: 'SKEIN_LAB_SCENARIO_INVALID',
  /** A scenario cannot be laid out (too many nodes, addresses exhausted...). */
  PlanInvalid: 'SKEIN_LAB_PLAN_INVALID',
  /** No lab, namespace or deployment by that name. */
  NotFound: 'SKEIN_LAB_NOT_FOUND',
  /** Several labs run and none was chosen. */
  Ambiguous: 'SKEIN_LAB_AMBIGUOUS',
  /** Another command holds the lab's lock. */
  Busy: 'SKEIN_LAB_BUSY',
  /** A label change is neither key=value nor key-. */
  BadLabel: 'SKEIN_LAB_BAD_LABEL',
  /** A replica count is out of range. */
  BadScale: 'SKEIN_LAB_BAD_SCALE',
  /** No pod by that name in the lab. */
  PodNotFound: 'SKEIN_LAB_POD_NOT_FOUND',
  /** A pod's program exited while it was starting. */
  PodExited: 'SKEIN_LAB_POD_EXITED',
  /** Pods did not become ready in time. */
  PodNotReady: 'SKEIN_LAB_POD_NOT_READY',
  /** The agent did not serve a new pod in time. */
  PodNotEnrolled: 'SKEIN_LAB_POD_NOT_ENROLLED',
  /** An agent or the controller exited while the lab waited for it. */
  ComponentExited: 'SKEIN_LAB_COMPONENT_EXITED',
  /** An agent or the controller did not become ready in time. */
  ComponentTimeout: 'SKEIN_LAB_COMPONENT_TIMEOUT',
  /** `lab up --prometheus` without Debian's prometheus package installed. */
  PrometheusMissing: 'SKEIN_LAB_PROMETHEUS_MISSING',
  /** The lab's Prometheus or its host port forward could not be set up. */
  PrometheusFailed: 'SKEIN_LAB_PROMETHEUS_FAILED',
  /** A host loopback port forward to a lab process (the graph page, Prometheus) could not be set up. */
  ForwardFailed: 'SKEIN_LAB_FORWARD_FAILED',
  /** `skein lab upgrade-agent`: the new agent gave up or did not finish in time (the old one serves on). */
  UpgradeFailed: 'SKEIN_LAB_UPGRADE_FAILED',
  /** A CNI plugin of a lab node's chain failed (ADD or DEL); its CNI error (code, msg, details) is in the message. */
  CniFailed: 'SKEIN_LAB_CNI_FAILED',
} as const;
