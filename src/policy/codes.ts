/**
 * Stable error codes of the policy room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const PolicyCode = {
  /** The audit log's last line is not an audit record (torn write, foreign file): the chain cannot continue. */
  AuditLogUnreadable: 'SKEIN_POLICY_AUDIT_LOG_UNREADABLE',
  /** `skein audit verify`: a line was altered, removed, inserted or reordered (the line is named). */
  AuditChainBroken: 'SKEIN_POLICY_AUDIT_CHAIN_BROKEN',
} as const;
