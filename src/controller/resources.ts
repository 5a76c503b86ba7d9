/**
 * The resources the controller streams to agents, as the index holds them: type, key,
 * content version and JSON, plus the refusals of objects that are not served.
 */
import { createHash } from 'node:crypto';
import type { WorkloadSelector } from '../config/policy-model.js';

export type ResourceType = 'workload' | 'service' | 'node' | 'route' | 'authorization' | 'peer-authentication' | 'backend-policy';

/** One resource as agents receive it. */
export interface ResourceEntry {
  type: ResourceType;
  /** Unique within the type: uid for workloads, `namespace/name` otherwise (`Kind/ns/name` for routes). */
  key: string;
  /** Content hash: the same content has the same version across controller restarts. */
  version: string;
  json: string;
  /** Workloads: the node they run on. */
  node?: string;
  /** Namespaced policies: their namespace and selector (which workloads they apply to). */
  namespace?: string;
  selector?: WorkloadSelector;
  /** Policies: applies to every workload of the namespace, or of the mesh in the root namespace. */
  policy?: boolean;
}

/** Why an object is not served. */
export interface Refusal {
  /** `Kind/namespace/name` (cluster-scoped: `Kind/name`). */
  object: string;
  /** The object's identity key in the store. */
  key: string;
  /** File (folder source) or `kube`. */
  origin: string;
  field: string;
  reason: string;
  code: string;
}

export interface IndexUpdate {
  version: string;
  /** `type|key` of every resource added, changed or removed. */
  changed: Set<string>;
}

export function entryOf(type: ResourceType, key: string, value: unknown, extra: Partial<ResourceEntry> = {}): ResourceEntry {
  const json = JSON.stringify(value);
  return { type, key, json, version: hashOf(json), ...extra };
}

export function resKey(type: ResourceType, key: string): string {
  return `${type}|${key}`;
}

export function hashOf(json: string): string {
  return createHash('sha1').update(json).digest('base64url').slice(0, 16);
}
