import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import type { CreateCertificateRequest, CreateCertificateResponse } from '../../../src/api/ca-wire.js';
import type { ConfigRequest, ConfigResponse, StatusResponse } from '../../../src/api/config-wire.js';
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
  };
  const encodeResponse = svc.StreamConfig!.responseSerialize;
  t.same(stream.deserialize(encodeResponse(response)), response);
  const request: ConfigRequest = {
    node: 'node-a',
    response_nonce: 'n1',
    error_detail: { code: 'SKEIN_X', message: 'm', resource: 'service|a', field: 'spec' },
    applied_version: 'v6',
    agent_version: 'a1',
  };
  t.same(svc.StreamConfig!.requestDeserialize(stream.serialize(request)), request);
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
});

t.test('the CA wire types match ca.proto field for field', async (t) => {
  const svc = loadApiService('ca.proto', 'skein.ca.v1.CertificateService');
  const create = wireMethod<CreateCertificateRequest, CreateCertificateResponse>(svc, 'CreateCertificate');
  const request: CreateCertificateRequest = { csr: 'PEM', validity_seconds: 3600 };
  t.same(svc.CreateCertificate!.requestDeserialize(create.serialize(request)), request);
  const response: CreateCertificateResponse = { cert_chain: ['a', 'b'], trust_bundle: ['b'], validity_seconds: 60 };
  t.same(create.deserialize(svc.CreateCertificate!.responseSerialize(response)), response);
});
