/** Stable error codes of the config room. */
export const ConfigErrorCode = {
  /** A file could not be read. */
  Read: 'SKEIN_CONFIG_READ',
  /** A file is not valid YAML. */
  Parse: 'SKEIN_CONFIG_PARSE',
  /** A Kubernetes object is missing a field or has a value of the wrong shape. */
  Invalid: 'SKEIN_CONFIG_INVALID',
  /** A translated snapshot breaks an invariant (duplicate uid, VIP:port claimed twice...). */
  Snapshot: 'SKEIN_CONFIG_SNAPSHOT_INVALID',
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
