/**
 * CustomResourceDefinition manifests of skein's policy kinds, generated from the same
 * schemas the controller validates with (kinds.ts), so the two cannot drift. The files in
 * deploy/kubernetes/crds/ are this output (a unit test compares them).
 */
import { stringify } from 'yaml';
import { groupOf, KINDS, type KindInfo } from './kinds.js';
import { toOpenApi } from './schema.js';

export function crdObject(k: KindInfo): Record<string, unknown> {
  const group = groupOf(k.apiVersion);
  const version = k.apiVersion.slice(group.length + 1);
  const schema = toOpenApi(k.schema) as { properties: Record<string, unknown> };
  // apiVersion/kind/metadata are the API server's; the CRD schema describes spec and status.
  const properties = {
    spec: schema.properties.spec,
    status: {
      type: 'object',
      properties: {
        conditions: {
          type: 'array',
          items: {
            type: 'object',
            required: ['type', 'status'],
            properties: {
              type: { type: 'string' },
              status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
              reason: { type: 'string' },
              message: { type: 'string' },
              observedGeneration: { type: 'integer' },
              lastTransitionTime: { type: 'string', format: 'date-time' },
            },
          },
        },
      },
    },
  };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${k.plural}.${group}`, labels: { 'app.kubernetes.io/part-of': 'skein' } },
    spec: {
      group,
      scope: 'Namespaced',
      names: { kind: k.kind, listKind: `${k.kind}List`, plural: k.plural, singular: k.kind.toLowerCase(), shortNames: k.crd?.shortNames ?? [] },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          schema: { openAPIV3Schema: { type: 'object', description: k.crd?.description, properties } },
        },
      ],
    },
  };
}

/** file name -> YAML text, one file per skein kind. */
export function renderCrds(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of KINDS) {
    if (!k.crd) continue;
    out[`${k.plural}.${groupOf(k.apiVersion)}.yaml`] =
      `# Generated from src/controller/kinds.ts (renderCrds); edit the schema there, not here.\n${stringify(crdObject(k), { aliasDuplicateObjects: false })}`;
  }
  return out;
}
