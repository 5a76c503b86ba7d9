import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

// A metric of a given name can be registered once per registry; a second CA or store on the
// same registry (tests, an agent restarting its store) reuses it.
function once<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** CA side: issuances, refusals by reason (stable skein code), signing latency. */
export function caMetrics(registry: Registry) {
  return {
    issued: once(
      registry,
      'skein_ca_certificates_issued_total',
      () => new Counter({ name: 'skein_ca_certificates_issued_total', help: 'Workload certificates signed by the mesh CA', registers: [registry] }),
    ),
    refused: once(
      registry,
      'skein_ca_requests_refused_total',
      () =>
        new Counter({
          name: 'skein_ca_requests_refused_total',
          help: 'Certificate requests the CA refused, by skein error code',
          labelNames: ['reason'] as const,
          registers: [registry],
        }),
    ),
    signingSeconds: once(
      registry,
      'skein_ca_signing_duration_seconds',
      () =>
        new Histogram({
          name: 'skein_ca_signing_duration_seconds',
          help: 'Time to validate a CSR and sign its certificate',
          buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
          registers: [registry],
        }),
    ),
  };
}
export type CaMetrics = ReturnType<typeof caMetrics>;

/** Agent side: issuances, failures by reason, time to issue, expiry per held identity. */
export function certificateStoreMetrics(registry: Registry) {
  return {
    issued: once(
      registry,
      'skein_identity_certificates_issued_total',
      () => new Counter({ name: 'skein_identity_certificates_issued_total', help: 'Workload certificates obtained from the CA', registers: [registry] }),
    ),
    failures: once(
      registry,
      'skein_identity_certificate_failures_total',
      () =>
        new Counter({
          name: 'skein_identity_certificate_failures_total',
          help: 'Failed certificate requests, by skein error code',
          labelNames: ['reason'] as const,
          registers: [registry],
        }),
    ),
    issueSeconds: once(
      registry,
      'skein_identity_certificate_issue_duration_seconds',
      () =>
        new Histogram({
          name: 'skein_identity_certificate_issue_duration_seconds',
          help: 'Time from key generation to an installed certificate',
          buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
          registers: [registry],
        }),
    ),
    expiry: once(
      registry,
      'skein_identity_certificate_expiry_timestamp_seconds',
      () =>
        new Gauge({
          name: 'skein_identity_certificate_expiry_timestamp_seconds',
          help: 'notAfter of the certificate held for each local identity',
          labelNames: ['identity'] as const,
          registers: [registry],
        }),
    ),
    heldIdentities: once(
      registry,
      'skein_identity_held',
      () => new Gauge({ name: 'skein_identity_held', help: 'Identities with a local pod (certificates held or pending)', registers: [registry] }),
    ),
    trustedRoots: once(
      registry,
      'skein_identity_trust_bundle_roots',
      () => new Gauge({ name: 'skein_identity_trust_bundle_roots', help: 'Roots in the trust bundle', registers: [registry] }),
    ),
  };
}
export type CertificateStoreMetrics = ReturnType<typeof certificateStoreMetrics>;
