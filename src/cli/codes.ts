/**
 * Stable error codes of the cli room (SKEIN_<AREA>_<CAUSE>): installing skein on a cluster
 * and checking a node or a cluster for it. test/unit/error-codes.test.ts keeps them listed
 * in the README.
 */
export const InstallCode = {
  /** A values file for skein install/uninstall is unreadable, not YAML, or has a field of the wrong type, range or name. */
  ValuesInvalid: 'SKEIN_INSTALL_VALUES_INVALID',
  /** skein check found at least one failing check (each line names it and gives a hint). */
  CheckFailed: 'SKEIN_INSTALL_CHECK_FAILED',
} as const;
