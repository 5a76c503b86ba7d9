/**
 * Stable error codes of the api room (SKEIN_<AREA>_<CAUSE>); see agent/codes.ts for the rules.
 */
export const ApiCode = {
  /** The agent's admin API could not be reached over its socket, or answered an error. */
  AdminUnreachable: 'SKEIN_ADMIN_UNREACHABLE',
} as const;
