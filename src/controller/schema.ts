/**
 * A small structural schema for the objects skein consumes. One definition serves two
 * purposes: refusing malformed objects (unknown fields, wrong types, bad enums, invalid
 * CIDRs) with the exact field path, and generating the CRDs' openAPIV3Schema, so the
 * manifests in deploy/kubernetes/crds and the controller can never disagree.
 */
import { isIP } from 'node:net';

export type Schema =
  | {
      type: 'object';
      fields: Record<string, Schema>;
      required?: string[];
      open?: boolean;
      description?: string;
      /** Fields of the upstream API that skein refuses, with why (named in the refusal). */
      unsupported?: Record<string, string>;
    }
  | { type: 'map'; values: Schema; description?: string }
  | { type: 'array'; items: Schema; minItems?: number; maxItems?: number; description?: string }
  | {
      type: 'string';
      enum?: string[];
      /** Enum values of the upstream API that skein refuses, with why. */
      unsupportedValues?: Record<string, string>;
      /** `duration`: Go-style ("1.5s"); `gateway-duration`: Gateway API's `^([0-9]{1,5}(h|m|s|ms)){1,4}$`. */
      format?: 'cidr' | 'duration' | 'gateway-duration';
      description?: string;
    }
  | { type: 'integer'; minimum?: number; maximum?: number; enum?: number[]; description?: string }
  /** A JSON number (fractions allowed), e.g. a percentage. */
  | { type: 'number'; minimum?: number; maximum?: number; description?: string }
  | { type: 'boolean'; description?: string }
  /** Anything (fields skein does not read, e.g. Pod container details). */
  | { type: 'any' };

export interface SchemaProblem {
  field: string;
  reason: string;
}

const DURATION_RE = /^(\d+(\.\d+)?(ms|s|m|h))+$/;
/** Gateway API's Duration (GEP-2257): 1-4 parts of up to 5 digits, no fractions, no sign. */
const GATEWAY_DURATION_RE = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;

/** Milliseconds of a Go-style duration ("1.5s", "250ms", "1m30s"). */
export function durationMs(value: string): number {
  let total = 0;
  for (const m of value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  }
  return total;
}

/** True for `a.b.c.d/n` or an IPv6 prefix, with a host part of zeros not required. */
export function isCidr(value: string): boolean {
  const slash = value.indexOf('/');
  const ip = slash < 0 ? value : value.slice(0, slash);
  const family = isIP(ip);
  if (family === 0) return false;
  if (slash < 0) return true; // a single address is a /32 or /128
  const bits = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** Returns every problem of `value` against `schema`, each with its dotted field path. */
export function checkSchema(value: unknown, schema: Schema, path = ''): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const here = path === '' ? '(object)' : path;
  switch (schema.type) {
    case 'any':
      return out;
    case 'object': {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        out.push({ field: here, reason: 'expected a mapping' });
        return out;
      }
      const o = value as Record<string, unknown>;
      for (const r of schema.required ?? []) {
        if (o[r] === undefined || o[r] === null) out.push({ field: join(path, r), reason: 'missing' });
      }
      for (const [k, v] of Object.entries(o)) {
        // Own properties only: a field named __proto__ or constructor (JSON.parse makes them
        // own keys) must not find Object.prototype's (found by the translation property test).
        const sub = Object.hasOwn(schema.fields, k) ? schema.fields[k] : undefined;
        if (!sub) {
          const why = schema.unsupported && Object.hasOwn(schema.unsupported, k) ? schema.unsupported[k] : undefined;
          if (why) out.push({ field: join(path, k), reason: `unknown field: ${why}` });
          else if (!schema.open) out.push({ field: join(path, k), reason: 'unknown field' });
          continue;
        }
        if (v === null || v === undefined) continue;
        out.push(...checkSchema(v, sub, join(path, k)));
      }
      return out;
    }
    case 'map': {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        out.push({ field: here, reason: 'expected a mapping' });
        return out;
      }
      for (const [k, v] of Object.entries(value)) out.push(...checkSchema(v, schema.values, join(path, k)));
      return out;
    }
    case 'array': {
      if (!Array.isArray(value)) {
        out.push({ field: here, reason: 'expected a list' });
        return out;
      }
      if (schema.minItems !== undefined && value.length < schema.minItems) {
        out.push({ field: here, reason: `expected at least ${schema.minItems} item(s)` });
      }
      if (schema.maxItems !== undefined && value.length > schema.maxItems) {
        out.push({ field: here, reason: `expected at most ${schema.maxItems} item(s)` });
      }
      for (const [i, v] of value.entries()) out.push(...checkSchema(v, schema.items, `${path}[${i}]`));
      return out;
    }
    case 'string': {
      if (typeof value !== 'string') {
        out.push({ field: here, reason: `expected a string, got ${typeof value}` });
        return out;
      }
      const why = schema.unsupportedValues && Object.hasOwn(schema.unsupportedValues, value) ? schema.unsupportedValues[value] : undefined;
      if (why) out.push({ field: here, reason: `unsupported value ${JSON.stringify(value)}: ${why}` });
      else if (schema.enum && !schema.enum.includes(value)) {
        out.push({ field: here, reason: `expected one of ${schema.enum.join(', ')}, got ${JSON.stringify(value)}` });
      }
      if (schema.format === 'cidr' && !isCidr(value)) out.push({ field: here, reason: `not a valid CIDR: ${JSON.stringify(value)}` });
      if (schema.format === 'duration' && !DURATION_RE.test(value)) {
        out.push({ field: here, reason: `not a duration (e.g. 250ms, 1.5s, 1m): ${JSON.stringify(value)}` });
      }
      if (schema.format === 'gateway-duration' && !GATEWAY_DURATION_RE.test(value)) {
        out.push({ field: here, reason: `not a Gateway API duration (1-4 of <up to 5 digits><h|m|s|ms>, e.g. 500ms, 1m30s): ${JSON.stringify(value)}` });
      }
      return out;
    }
    case 'integer': {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        out.push({ field: here, reason: `expected an integer, got ${JSON.stringify(value)}` });
        return out;
      }
      if (schema.enum && !schema.enum.includes(value)) out.push({ field: here, reason: `expected one of ${schema.enum.join(', ')}, got ${value}` });
      if (schema.minimum !== undefined && value < schema.minimum) out.push({ field: here, reason: `must be >= ${schema.minimum}` });
      if (schema.maximum !== undefined && value > schema.maximum) out.push({ field: here, reason: `must be <= ${schema.maximum}` });
      return out;
    }
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        out.push({ field: here, reason: `expected a number, got ${JSON.stringify(value)}` });
        return out;
      }
      if (schema.minimum !== undefined && value < schema.minimum) out.push({ field: here, reason: `must be >= ${schema.minimum}` });
      if (schema.maximum !== undefined && value > schema.maximum) out.push({ field: here, reason: `must be <= ${schema.maximum}` });
      return out;
    }
    case 'boolean':
      if (typeof value !== 'boolean') out.push({ field: here, reason: `expected a boolean, got ${typeof value}` });
      return out;
  }
}

/**
 * What the API server can check of a string format before the controller sees it: the
 * durations' own regular expressions, and for CIDRs a coarse shape (hex digits, dots, colons,
 * an optional /prefix) with a length cap; the controller's isCidr is the precise check.
 */
export const CIDR_PATTERN = '^[0-9a-fA-F:.]+(/[0-9]{1,3})?$';

function stringPattern(format: 'cidr' | 'duration' | 'gateway-duration' | undefined): Record<string, unknown> {
  if (format === 'duration') return { pattern: DURATION_RE.source };
  if (format === 'gateway-duration') return { pattern: GATEWAY_DURATION_RE.source };
  if (format === 'cidr') return { pattern: CIDR_PATTERN, maxLength: 64 };
  return {};
}

/** The openAPIV3Schema of a CRD version for `schema`. */
export function toOpenApi(schema: Schema): Record<string, unknown> {
  const desc = 'description' in schema && schema.description ? { description: schema.description } : {};
  switch (schema.type) {
    case 'any':
      return { 'x-kubernetes-preserve-unknown-fields': true };
    case 'object': {
      const properties: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(schema.fields)) properties[k] = toOpenApi(v);
      return {
        type: 'object',
        ...desc,
        properties,
        ...(schema.required?.length ? { required: schema.required } : {}),
        ...(schema.open ? { 'x-kubernetes-preserve-unknown-fields': true } : {}),
      };
    }
    case 'map':
      return { type: 'object', ...desc, additionalProperties: toOpenApi(schema.values) };
    case 'array':
      return {
        type: 'array',
        ...desc,
        items: toOpenApi(schema.items),
        ...(schema.minItems ? { minItems: schema.minItems } : {}),
        ...(schema.maxItems !== undefined ? { maxItems: schema.maxItems } : {}),
      };
    case 'string':
      return { type: 'string', ...desc, ...(schema.enum ? { enum: schema.enum } : {}), ...stringPattern(schema.format) };
    case 'integer':
    case 'number':
      return {
        type: schema.type,
        ...desc,
        ...(schema.type === 'integer' && schema.enum ? { enum: schema.enum } : {}),
        ...(schema.minimum !== undefined ? { minimum: schema.minimum } : {}),
        ...(schema.maximum !== undefined ? { maximum: schema.maximum } : {}),
      };
    case 'boolean':
      return { type: 'boolean', ...desc };
  }
}
