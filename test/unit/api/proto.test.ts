import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import type { CreateCertificateRequest, CreateCertificateResponse } from '../../../src/api/ca-wire.js';
import type { CaStatus, ConfigRequest, ConfigResponse, RotateCaRequest, StatusResponse, TapEvent, TapRequest, TrafficRequest, TrafficResponse } from '../../../src/api/config-wire.js';
import { loadApiService, wireMethod } from '../../../src/api/proto.js';
import { findRepoRoot, repoPath } from '../../../src/paths.js';

t.test('the repo root is found from src/ and from dist/, so .proto files load from both', async (t) => {
  const root = findRepoRoot();
  t.ok(existsSync(join(root, 'package.json')));
  t.ok(existsSync(repoPath('src', 'api', 'ca.proto')));
  // Where tsc puts the compiled module (the file need not exist: only its directories matter).
  t.equal(findRepoRoot(pathToFileURL(join(root, 'dist', 'api', 'proto.js')).href), root);
  t.equal(findRepoRoot(join(root, 'src', 'api', 'proto.ts')), root, 'plain paths too');
  t.throws(() => findRepoRoot('/definitely/not/here/x.js'));
  t.same(Object.keys(loadApiService('ca.proto', 'skein.ca.v1.CertificateService')).sort(), ['CreateCertificate', 'GetTrustBundle']);
  t.throws(() => loadApiService('ca.proto', 'skein.ca.v1.CreateCertificateRequest'), /no service/, 'a message is not a service');
});

const TAP_EVENT: TapEvent = {
  session: 's1',
  node: 'node-a',
  reporter: 'destination',
  at: '2026-01-01T00:00:00.000Z',
  source_workload: 'client',
  source_namespace: 'shop',
  source_principal: 'spiffe://td/ns/shop/sa/client',
  destination_workload: 'echo',
  destination_namespace: 'shop',
  destination_service: 'echo.shop.svc.cluster.local',
  destination_principal: 'spiffe://td/ns/shop/sa/echo',
  protocol: 'http',
  method: 'GET',
  path: '/x',
  status: 403,
  grpc_status: '7',
  duration_ms: 1.25,
  response_flags: 'RBAC',
  mtls: true,
};

// Every field set to a non-default value: a field the wire type names differently from the
// .proto would be dropped by the encoder and the round trip would differ.
t.test('the config wire types match config.proto field for field', async (t) => {
  const svc = loadApiService('config.proto', 'skein.config.v1.ConfigDiscovery');
  const stream = wireMethod<ConfigRequest, ConfigResponse>(svc, 'StreamConfig');
  const response: ConfigResponse = {
    system_version: 'v7',
    nonce: 'n1',
    full_state: true,
    resources: [{ type: 'service', key: 'shop/echo', version: 'h1', json: '{}' }],
    removed_resources: [{ type: 'workload', key: 'uid-1' }],
    trust_domain: 'cluster.local',
    cluster_domain: 'cluster.local',
    controller_id: 'c1',
    tap: { session: 's1', stop: true, filter: { namespace: 'shop', from: 'client', to: 'shop/echo', path: '/api' }, max_per_second: 20, ttl_seconds: 60 },
    identity: { refresh_bundle: true, reissue: true },
  };
  const encodeResponse = svc.StreamConfig!.responseSerialize;
  t.same(stream.deserialize(encodeResponse(response)), response);
  const request: ConfigRequest = {
    node: 'node-a',
    response_nonce: 'n1',
    error_detail: { code: 'SKEIN_X', message: 'm', resource: 'service|a', field: 'spec' },
    applied_version: 'v6',
    agent_version: 'a1',
    traffic: {
      interval_ms: 5000,
      latency_bounds_ms: [1, 2.5],
      dropped: 3,
      edges: [
        {
          reporter: 'source',
          source_workload: 'client',
          source_namespace: 'shop',
          source_principal: 'spiffe://td/ns/shop/sa/client',
          destination_workload: 'echo',
          destination_namespace: 'shop',
          destination_service: 'echo.shop.svc.cluster.local',
          destination_principal: 'spiffe://td/ns/shop/sa/echo',
          protocol: 'grpc',
          mtls: true,
          requests: 10,
          errors: 2,
          denials: 1,
          latency_counts: [1, 2, 7],
          latency_sum_ms: 12.5,
          bytes_sent: 100,
          bytes_received: 200,
        },
      ],
    },
    tap_events: [TAP_EVENT],
    identity: { trusted_roots: ['AB:CD', 'EF:01'], certificates: [{ identity: 'spiffe://td/ns/shop/sa/echo', root: 'AB:CD', serial: '0A', not_after: '2026-01-02T00:00:00.000Z' }] },
  };
  t.same(svc.StreamConfig!.requestDeserialize(stream.serialize(request)), request);
  const caStatus = wireMethod<Record<string, never>, CaStatus>(svc, 'GetCaStatus');
  const ca: CaStatus = {
    authorities: [{ id: 'AB:CD', active: true, subject: 'O=skein', not_after: '2036-01-01T00:00:00.000Z' }],
    rotation: { phase: 'reissuing', from: 'EF:01', to: 'AB:CD', started_at: 't0', updated_at: 't1', completed_at: 't2' },
    agents: [{ node: 'node-a', trusted_roots: ['AB:CD'], certificates: [{ identity: 'i', root: 'AB:CD', serial: '01', not_after: 'n' }], reported_at: 't3' }],
    pending: ['node-b (not connected)'],
    rotatable: true,
    note: 'n',
    bundle_pem: ['-----BEGIN CERTIFICATE-----'],
  };
  t.same(caStatus.deserialize(svc.GetCaStatus!.responseSerialize(ca)), ca);
  const rotate = wireMethod<RotateCaRequest, CaStatus>(svc, 'RotateCa');
  t.same(svc.RotateCa!.requestDeserialize(rotate.serialize({ step: 'activate' })), { step: 'activate' });
  const status = wireMethod<Record<string, never>, StatusResponse>(svc, 'GetStatus');
  const sent: StatusResponse = {
    controller_id: 'c1',
    version: 'v7',
    objects: 3,
    resources: 4,
    refusals: [{ object: 'o', origin: 'f.yaml', field: 'x', reason: 'r', code: 'SKEIN_Y' }],
    agents: [{ node: 'n', peer: 'p', connected_at: 't', acked_version: 'v', acks: 1, nacks: 2, last_nack: 'l', resources: 5, bytes_sent: 6 }],
    leader: true,
    policies: [{ object: 'AuthorizationPolicy/shop/p', version: 'h1', needed_on: ['a', 'b'], enforced_on: ['a'], enforced: false, note: 'n' }],
    traffic: [{ object: 'HTTPRoute/shop/r', version: 'h2', acked_on: ['a'], agents: 2 }],
  };
  t.same(status.deserialize(svc.GetStatus!.responseSerialize(sent)), sent);
  const traffic = wireMethod<TrafficRequest, TrafficResponse>(svc, 'GetTraffic');
  const figures: TrafficResponse = {
    window_seconds: 59.5,
    dropped: 4,
    nodes: ['node-a'],
    edges: [
      {
        source: 'shop/client',
        destination: 'shop/echo',
        destination_service: 'echo.shop.svc.cluster.local',
        protocol: 'http',
        mtls: true,
        requests: 9,
        errors: 1,
        denials: 1,
        rps: 0.15,
        success_rate: 0.875,
        p50_ms: 1.5,
        p99_ms: 9.5,
        bytes_sent: 3,
        bytes_received: 4,
        reporters: ['source', 'destination'],
      },
    ],
    workloads: [{ name: 'shop/echo', requests: 9, errors: 1, denials: 1, rps: 0.15, success_rate: 0.875, p50_ms: 1.5, p99_ms: 9.5, outbound_rps: 0.5, mtls: true }],
  };
  t.same(traffic.deserialize(svc.GetTraffic!.responseSerialize(figures)), figures);
  const tap = wireMethod<TapRequest, TapEvent>(svc, 'Tap');
  const ask: TapRequest = { filter: { namespace: 'shop', from: 'client', to: 'echo', path: '/' }, max_per_second: 5, max_events: 10, duration_seconds: 30 };
  t.same(svc.Tap!.requestDeserialize(tap.serialize(ask)), ask);
  t.same(tap.deserialize(svc.Tap!.responseSerialize(TAP_EVENT)), TAP_EVENT);
});

t.test('the CA wire types match ca.proto field for field', async (t) => {
  const svc = loadApiService('ca.proto', 'skein.ca.v1.CertificateService');
  const create = wireMethod<CreateCertificateRequest, CreateCertificateResponse>(svc, 'CreateCertificate');
  const request: CreateCertificateRequest = { csr: 'PEM', validity_seconds: 3600 };
  t.same(svc.CreateCertificate!.requestDeserialize(create.serialize(request)), request);
  const response: CreateCertificateResponse = { cert_chain: ['a', 'b'], trust_bundle: ['b'], validity_seconds: 60 };
  t.same(create.deserialize(svc.CreateCertificate!.responseSerialize(response)), response);
});
