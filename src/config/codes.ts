/**
 * Stable error codes of the config room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const ConfigCode = {
  /** A file could not be read. */
  Read: 'SKEIN_CONFIG_READ',
  /** A file is not valid YAML. */
  Parse: 'SKEIN_CONFIG_PARSE',
  /** A Kubernetes object is missing a field or has a value of the wrong shape. */
  Invalid: 'SKEIN_CONFIG_INVALID',
  /** A translated snapshot breaks an invariant (duplicate uid, VIP:port claimed twice...). */
  SnapshotInvalid: 'SKEIN_CONFIG_SNAPSHOT_INVALID',
  /** Watching a config folder failed; changes are no longer seen. */
  WatchFailed: 'SKEIN_CONFIG_WATCH_FAILED',
  /** A config source was started twice. */
  SourceStarted: 'SKEIN_CONFIG_SOURCE_STARTED',
  /** The controller cannot be reached or the stream broke; the agent keeps its last config. */
  ControllerUnavailable: 'SKEIN_CONFIG_CONTROLLER_UNAVAILABLE',
  /** A response from the controller was refused (NACKed); the agent keeps its last config. */
  ControllerRejected: 'SKEIN_CONFIG_CONTROLLER_REJECTED',
} as const;

/** Where a config problem is: details every config SkeinError carries. */
export interface ConfigProblem {
  file?: string;
  /** Dotted path of the offending field, e.g. `spec.ports[0].port`. */
  field: string;
  reason: string;
  /** `<kind>/<namespace>/<name>` of the object when known. */
  object?: string;
}
